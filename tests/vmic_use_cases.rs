//! Every HEPiX VMIC use case (../shared/seeds/hepix-vmic-use-cases.txt),
//! one test each, named after it: endorsers publishing with their own keys,
//! a VO list signed by its managers, all served by a real nginx on
//! 127.0.0.1, and two sites — S1 supports the VO, S2 does not — checked
//! after every step for what they hold.

mod common;
#[path = "common/http.rs"]
mod fault;
#[path = "common/nginx.rs"]
mod nginx;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Endorsers, a VO and the web root nginx serves.
struct World {
    tmp: tempfile::TempDir,
    nginx: nginx::Nginx,
}

/// One endorser: its key, its images and where it publishes.
struct Endorser {
    name: String,
    key: PathBuf,
    images: PathBuf,
}

/// A site directory, driven through the real binary.
struct Site {
    dir: PathBuf,
    hook_log: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("www")).unwrap();
        let nginx = nginx::Nginx::serve(&tmp.path().join("www"));
        World { tmp, nginx }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}/", self.nginx.url().trim_end_matches('/'))
    }

    /// A key pair `keys/NAME.key` (+ `.pub`), unencrypted.
    fn key(&self, name: &str) -> PathBuf {
        std::fs::create_dir_all(self.path("keys")).unwrap();
        let key = self.path(&format!("keys/{name}.key"));
        expect_ok(&vmic(["keygen", "-W", "--out", path_str(&key)]));
        key
    }

    /// An endorser with one image, `NAME-os@1`, published.
    fn endorser(&self, name: &str) -> Endorser {
        let e = Endorser {
            name: name.to_string(),
            key: self.key(name),
            images: self.path(&format!("src/{name}")),
        };
        std::fs::create_dir_all(&e.images).unwrap();
        // Distinct bytes per endorser: identical bytes would carry approvals.
        let seed = name.bytes().fold(11u64, |h, b| h * 31 + u64::from(b));
        self.add_image(&e, &format!("{name}-os"), "1", seed);
        self.publish(&e);
        e
    }

    fn add_image(&self, e: &Endorser, id: &str, version: &str, seed: u64) {
        let file = e.images.join(format!("{id}.img"));
        std::fs::write(&file, pattern(40_000, seed)).unwrap();
        std::fs::write(
            e.images.join(format!("{id}.img.toml")),
            format!("id = \"{id}\"\nversion = \"{version}\"\nos = \"linux\"\n"),
        )
        .unwrap();
    }

    fn publish(&self, e: &Endorser) {
        expect_ok(&self.build(e, &[]));
    }

    /// `vmic build` of the endorser's images into `www/NAME` with its key.
    fn build(&self, e: &Endorser, extra: &[&str]) -> Output {
        let out = self.path(&format!("www/{}", e.name));
        let mut args = vec![
            "build",
            path_str(&e.images),
            "--key",
            path_str(&e.key),
            "--out",
            path_str(&out),
        ];
        args.extend(extra);
        vmic(args)
    }

    /// Write VO.toml for VO `atlas` listing `endorsers`, removing `removed`
    /// (name, reason, images), and build it with `manager`'s key into
    /// `www/atlas-vo`.
    fn vo_list(
        &self,
        manager: &Path,
        endorsers: &[&Endorser],
        removed: &[(&Endorser, &str, &str)],
    ) {
        self.vo_list_of("atlas", "30d", manager, endorsers, removed);
    }

    /// The list of VO `vo`, valid for `expires`, built into `www/VO-vo`.
    fn vo_list_of(
        &self,
        vo: &str,
        expires: &str,
        manager: &Path,
        endorsers: &[&Endorser],
        removed: &[(&Endorser, &str, &str)],
    ) {
        let mut toml = format!("[vo]\nname = \"{vo}\"\nexpires = \"{expires}\"\n");
        for e in endorsers {
            toml.push_str(&format!(
                "[[endorser]]\nname = \"{}\"\npubkey = \"{}.pub\"\nurls = [\"{}\"]\n",
                e.name,
                e.key.display(),
                self.url(&e.name)
            ));
        }
        for (e, reason, images) in removed {
            toml.push_str(&format!(
                "[[removed]]\nname = \"{}\"\npubkey = \"{}.pub\"\nreason = \"{reason}\"\nimages = \"{images}\"\n",
                e.name,
                e.key.display()
            ));
        }
        let file = self.path(&format!("{vo}.toml"));
        std::fs::write(&file, toml).unwrap();
        let out = self.path(&format!("www/{vo}-vo"));
        expect_ok(&vmic([
            "vo",
            "build",
            path_str(&file),
            "--key",
            path_str(manager),
            "--out",
            path_str(&out),
        ]));
    }

    fn site(&self, name: &str) -> Site {
        let dir = self.path(name);
        let s = Site {
            hook_log: self.path(&format!("{name}-hooks.log")),
            dir,
        };
        expect_ok(&s.run(&["site", "init"]));
        let hook = self.path(&format!("{name}-hook.sh"));
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$VMIC_EVENT $VMIC_ENDORSER $VMIC_IMAGE_ID\" >> {}\n",
                s.hook_log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let toml = s.dir.join("site.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let text = text.replacen(
            "# command = \"/usr/local/bin/vmic-event\"",
            &format!("command = \"{}\"", hook.display()),
            1,
        );
        std::fs::write(&toml, text).unwrap();
        s
    }

    /// S1 supports VO atlas (managers' keys given, auto or manual).
    fn support_vo(&self, site: &Site, managers: &[&Path], threshold: u32, mode: &str) -> Output {
        self.support_vo_named(site, "atlas", managers, threshold, mode)
    }

    fn support_vo_named(
        &self,
        site: &Site,
        vo: &str,
        managers: &[&Path],
        threshold: u32,
        mode: &str,
    ) -> Output {
        let mut args = vec!["vo".to_string(), "add".into(), vo.into()];
        for m in managers {
            args.push("--pubkey".into());
            args.push(format!("{}.pub", m.display()));
        }
        args.extend([
            "--threshold".into(),
            threshold.to_string(),
            "--url".into(),
            self.url(&format!("{vo}-vo")),
            "--endorsers".into(),
            mode.into(),
        ]);
        site.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A site trusts an endorser directly.
    fn trust(&self, site: &Site, e: &Endorser, extra: &[&str]) {
        let pubkey = format!("{}.pub", e.key.display());
        let url = self.url(&e.name);
        let mut args = vec!["trust", "add", &e.name, "--pubkey", &pubkey, "--url", &url];
        args.extend(extra);
        expect_ok(&site.run(&args));
    }
}

impl Site {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--site".to_string(), path_str(&self.dir).to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        vmic(all)
    }

    fn sync(&self) -> Output {
        self.run(&["sync"])
    }

    /// `(endorser, id@version, state)` of every image, sorted.
    fn holds(&self) -> Vec<(String, String, String)> {
        let o = self.run(&["images", "--json"]);
        expect_ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut out: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["endorser"].as_str().unwrap().to_string(),
                    format!(
                        "{}@{}",
                        i["id"].as_str().unwrap(),
                        i["version"].as_str().unwrap()
                    ),
                    i["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Images in the store, as `endorser id@version`.
    fn imported(&self) -> Vec<String> {
        self.holds()
            .into_iter()
            .filter(|(_, _, s)| s == "imported")
            .map(|(e, i, _)| format!("{e} {i}"))
            .collect()
    }

    fn trusted(&self) -> Vec<String> {
        let o = self.run(&["trust", "list", "--json"]);
        expect_ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn hooks(&self) -> String {
        std::fs::read_to_string(&self.hook_log).unwrap_or_default()
    }
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The usual start: endorser `cern` in VO atlas; S1 supports the VO, S2
/// trusts only its own local endorser.
struct Start {
    w: World,
    manager: PathBuf,
    cern: Endorser,
    s1: Site,
    s2: Site,
}

fn start() -> Start {
    let w = World::new();
    let manager = w.key("atlas-manager");
    let cern = w.endorser("cern");
    let local = w.endorser("s2-local");
    w.vo_list(&manager, &[&cern], &[]);
    let s1 = w.site("s1");
    expect_ok(&w.support_vo(&s1, &[&manager], 1, "auto"));
    let s2 = w.site("s2");
    w.trust(&s2, &local, &[]);
    expect_ok(&s1.sync());
    expect_ok(&s2.sync());
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
    assert_eq!(s2.imported(), s(&["s2-local s2-local-os@1"]));
    Start {
        w,
        manager,
        cern,
        s1,
        s2,
    }
}

#[test]
fn uc_1_1_1_a_new_endorser_of_the_vo_is_announced_to_every_supporting_site() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("VO atlas: trusted desy"),
        "{}",
        stdout(&o)
    );
    assert_eq!(st.s1.trusted(), s(&["cern", "desy"]));
    assert!(
        st.s1.hooks().contains("endorser-added desy"),
        "{}",
        st.s1.hooks()
    );
}

#[test]
fn uc_1_1_2_a_new_endorser_waits_for_the_sites_approval() {
    let w = World::new();
    let manager = w.key("atlas-manager");
    let cern = w.endorser("cern");
    w.vo_list(&manager, &[&cern], &[]);
    let s1 = w.site("s1");
    expect_ok(&w.support_vo(&s1, &[&manager], 1, "manual"));
    let o = s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("wait for `vmic trust accept`: cern"),
        "{}",
        stdout(&o)
    );
    assert!(
        s1.trusted().is_empty(),
        "nothing is trusted before the site accepts"
    );
    assert!(s1.holds().is_empty());
    assert!(
        s1.hooks().contains("endorser-pending cern"),
        "{}",
        s1.hooks()
    );
    // Announced once, not at every cron run.
    expect_ok(&s1.sync());
    assert_eq!(s1.hooks().matches("endorser-pending").count(), 1);
    expect_ok(&s1.run(&["trust", "accept", "cern"]));
    expect_ok(&s1.sync());
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
    let err = s1.run(&["trust", "accept", "cern"]);
    expect_fail(&err, 2, &["not an endorser waiting"]);
}

#[test]
fn uc_1_1_3_the_new_endorsers_images_are_made_available_at_supporting_sites() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1", "desy desy-os@1"]));
    assert!(
        st.s1.hooks().contains("import desy desy-os"),
        "{}",
        st.s1.hooks()
    );
}

#[test]
fn uc_1_2_1_the_vo_revokes_every_image_of_an_endorser_who_leaves() {
    let st = start();
    st.w.vo_list(&st.manager, &[], &[(&st.cern, "left the VO", "revoke")]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(stdout(&o).contains("left the VO"), "{}", stdout(&o));
    assert!(st.s1.imported().is_empty());
    assert!(st.s1.trusted().is_empty());
    assert!(
        st.s1.hooks().contains("revoke cern cern-os"),
        "{}",
        st.s1.hooks()
    );
    assert!(st.s1.hooks().contains("endorser-removed cern"));
}

#[test]
fn uc_1_2_2_the_vo_keeps_the_images_of_an_endorser_who_leaves() {
    let st = start();
    st.w.vo_list(&st.manager, &[], &[(&st.cern, "retired", "keep")]);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]), "kept");
    let list = st.s1.run(&["trust", "list"]);
    assert!(
        stdout(&list).contains("RETIRED, images kept"),
        "{}",
        stdout(&list)
    );
    // 1.2.3 holds too: a new image of the retired endorser is not taken.
    st.w.add_image(&st.cern, "cern-new", "1", 12);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    // Once the VO says revoke (it re-endorsed them elsewhere), they go.
    st.w.vo_list(
        &st.manager,
        &[],
        &[(&st.cern, "re-endorsed by desy", "revoke")],
    );
    expect_ok(&st.s1.sync());
    assert!(st.s1.imported().is_empty());
}

#[test]
fn uc_1_2_3_no_new_images_of_a_removed_endorser_reach_the_sites() {
    let st = start();
    st.w.vo_list(&st.manager, &[], &[(&st.cern, "left", "revoke")]);
    expect_ok(&st.s1.sync());
    st.w.add_image(&st.cern, "cern-new", "1", 13);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert!(st.s1.imported().is_empty());
    assert!(
        !st.s1
            .holds()
            .iter()
            .any(|(_, i, _)| i.starts_with("cern-new"))
    );
}

#[test]
fn uc_1_3_an_endorser_is_replaced_by_another() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(
        &st.manager,
        &[&desy],
        &[(&st.cern, "replaced by desy", "revoke")],
    );
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.trusted(), s(&["desy"]));
    assert_eq!(st.s1.imported(), s(&["desy desy-os@1"]));
}

#[test]
fn uc_1_4_1_a_site_supporting_the_vo_takes_the_new_endorser() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    expect_ok(&st.s1.sync());
    assert!(st.s1.trusted().contains(&"desy".to_string()));
}

#[test]
fn uc_1_4_2_a_site_not_supporting_the_vo_is_not_bothered() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    let before = st.s2.holds();
    let o = st.s2.sync();
    expect_ok(&o);
    assert!(!stdout(&o).contains("VO"), "{}", stdout(&o));
    assert_eq!(st.s2.holds(), before);
    assert_eq!(st.s2.trusted(), s(&["s2-local"]));
    assert!(!st.s2.hooks().contains("desy") && !st.s2.hooks().contains("cern"));
}

#[test]
fn uc_1_5_1_an_endorser_on_holiday_keeps_his_catalog_valid_with_resign() {
    let w = World::new();
    let e = w.endorser("cern");
    let out = w.path("www/cern");
    // Published for 3 days: inside the site's 7-day warning window.
    expect_ok(&w.build(&e, &["--expires", "3d"]));
    let s1 = w.site("s1");
    w.trust(&s1, &e, &[]);
    let o = s1.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("expires"), "{}", stderr(&o));
    assert!(s1.hooks().contains("expiring cern"));
    // Before leaving, the endorser re-signs for a month from cron, in seconds.
    expect_ok(&vmic([
        "resign",
        path_str(&out),
        "--key",
        path_str(&e.key),
        "--expires",
        "30d",
    ]));
    let o = s1.sync();
    expect_ok(&o);
    assert!(!stderr(&o).contains("expires"), "{}", stderr(&o));
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn uc_1_5_2_the_endorsers_server_is_down_and_a_mirror_serves() {
    let w = World::new();
    let e = w.endorser("cern");
    // A mirror of the publication elsewhere (a plain directory here).
    let mirror = w.path("mirror");
    copy_dir(&w.path("www/cern"), &mirror);
    let s1 = w.site("s1");
    w.trust(&s1, &e, &["--url", path_str(&mirror)]);
    std::fs::rename(w.path("www/cern"), w.path("www/cern-down")).unwrap();
    let o = s1.sync();
    expect_ok(&o);
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
    // trust edit moves the sources without losing anything.
    expect_ok(&s1.run(&["trust", "edit", "cern", "--url", path_str(&mirror)]));
    expect_ok(&s1.sync());
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn uc_2_1_a_new_image_is_released_and_sites_add_it() {
    let st = start();
    st.w.add_image(&st.cern, "cern-gpu", "1", 21);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-gpu@1", "cern cern-os@1"]));
}

#[test]
fn uc_2_2_the_endorser_revokes_an_image() {
    let st = start();
    std::fs::remove_file(st.cern.images.join("cern-os.img")).unwrap();
    std::fs::remove_file(st.cern.images.join("cern-os.img.toml")).unwrap();
    std::fs::write(
        st.cern.images.join("catalog.toml"),
        "[[revoke]]\nid = \"cern-os\"\nversion = \"1\"\nreason = \"CVE-2026-0001\"\n",
    )
    .unwrap();
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert!(st.s1.imported().is_empty());
    assert!(st.s1.hooks().contains("revoke cern cern-os"));
}

#[test]
fn uc_2_3_the_endorser_updates_an_image() {
    let st = start();
    st.w.add_image(&st.cern, "cern-os", "2", 23);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@2"]));
}

#[test]
fn uc_3_1_a_site_uses_its_own_image_for_local_users() {
    let w = World::new();
    let local = w.endorser("s1-local");
    let s1 = w.site("s1");
    w.trust(&s1, &local, &["--approve", "manual"]);
    expect_ok(&s1.sync());
    assert!(s1.imported().is_empty());
    expect_ok(&s1.run(&["approve", "s1-local-os"]));
    expect_ok(&s1.sync());
    assert_eq!(s1.imported(), s(&["s1-local s1-local-os@1"]));
}

#[test]
fn uc_3_2_a_site_shares_its_image_with_other_sites() {
    let st = start();
    // S2's own endorser is trusted by S1 too; S1 decides by hand.
    let local = Endorser {
        name: "s2-local".into(),
        key: st.w.path("keys/s2-local.key"),
        images: st.w.path("src/s2-local"),
    };
    st.w.trust(&st.s1, &local, &["--approve", "manual"]);
    expect_ok(&st.s1.sync());
    assert!(
        st.s1
            .holds()
            .contains(&("s2-local".into(), "s2-local-os@1".into(), "pending".into()))
    );
    expect_ok(&st.s1.run(&["approve", "s2-local-os"]));
    expect_ok(&st.s1.sync());
    assert!(
        st.s1
            .imported()
            .contains(&"s2-local s2-local-os@1".to_string())
    );
}

#[test]
fn uc_3_3_1_an_intact_image_from_a_trusted_endorser_is_made_available() {
    let st = start();
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    assert!(st.s1.hooks().contains("import cern cern-os"));
}

#[test]
fn uc_3_3_2_an_image_whose_integrity_is_violated_is_quarantined() {
    let w = World::new();
    let e = w.endorser("cern");
    let served = w.path("www/cern/images/cern-os.img");
    let mut bytes = std::fs::read(&served).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&served, bytes).unwrap();
    let s1 = w.site("s1");
    w.trust(&s1, &e, &[]);
    let o = s1.sync();
    expect_fail(&o, 1, &["quarantined"]);
    assert!(s1.imported().is_empty());
    assert!(s1.hooks().contains("quarantine cern cern-os"));
}

#[test]
fn uc_3_4_site_policy_forbids_an_image_of_a_trusted_endorser() {
    let st = start();
    let toml = st.s1.dir.join("site.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "# [[policy.deny]]\n# os = \"windows\"",
            "[[policy.deny]]\nid = \"cern-gpu\"",
            1,
        ),
    )
    .unwrap();
    st.w.add_image(&st.cern, "cern-gpu", "1", 34);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert!(
        st.s1
            .holds()
            .contains(&("cern".into(), "cern-gpu@1".into(), "rejected".into()))
    );
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn uc_3_5_a_site_stops_running_images_of_one_type() {
    let st = start();
    let toml = st.s1.dir.join("site.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "# [[policy.deny]]\n# os = \"windows\"",
            "[[policy.deny]]\nos = \"linux\"",
            1,
        ),
    )
    .unwrap();
    expect_ok(&st.s1.sync());
    assert!(st.s1.imported().is_empty());
    // Withdrawn by the site's own rule: a reject, with the rule as reason.
    assert!(
        st.s1.hooks().contains("reject cern cern-os"),
        "{}",
        st.s1.hooks()
    );
}

#[test]
fn uc_3_6_a_site_stops_running_every_image_of_an_endorser() {
    let st = start();
    expect_ok(&st.s1.run(&["trust", "remove", "cern"]));
    assert!(st.s1.imported().is_empty());
    // The VO still lists cern: it does not bring it back behind the
    // operator's back.
    expect_ok(&st.s1.sync());
    assert!(st.s1.trusted().is_empty());
    assert!(st.s1.imported().is_empty());
    let list = st.s1.run(&["vo", "list"]);
    assert!(
        stdout(&list).contains("cern  declined"),
        "{}",
        stdout(&list)
    );
    // Until the operator changes their mind.
    expect_ok(&st.s1.run(&["trust", "accept", "cern"]));
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn uc_3_7_a_new_image_becomes_available_at_the_next_poll() {
    let st = start();
    st.w.add_image(&st.cern, "cern-hpc", "1", 37);
    assert_eq!(
        st.s1.imported(),
        s(&["cern cern-os@1"]),
        "not before it is published"
    );
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    assert!(st.s1.imported().contains(&"cern cern-hpc@1".to_string()));
}

#[test]
fn uc_3_8_endorser_a_replaced_by_b_only_bs_images_are_trusted() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&desy], &[(&st.cern, "replaced", "revoke")]);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["desy desy-os@1"]));
    assert!(
        st.s1
            .holds()
            .contains(&("cern".into(), "cern-os@1".into(), "revoked".into()))
    );
}

// ---------------------------------------------------------------------
// Attacks on the trust lifecycle.

/// `vmic vo sign DIR --key KEY`: a co-signature of the VO list in `dir`.
fn vo_sign(dir: &Path, key: &Path) -> Output {
    vmic(["vo", "sign", path_str(dir), "--key", path_str(key)])
}

/// `vmic sign FILE --key KEY` (minisign-compatible detached signature).
fn sign_file(file: &Path, key: &Path) -> Output {
    vmic(["sign", path_str(file), "--key", path_str(key)])
}

/// The key id of the public key next to secret key `key`.
fn key_id(key: &Path) -> String {
    let text = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    vmic_format::minisign::PublicKey::parse(&text)
        .unwrap()
        .key_id
        .to_string()
}

#[test]
fn vo_list_signed_by_fewer_than_threshold_distinct_pinned_keys_is_refused() {
    let w = World::new();
    let (a, b, c) = (w.key("mgr-a"), w.key("mgr-b"), w.key("mgr-c"));
    let outsider = w.key("outsider");
    let cern = w.endorser("cern");
    w.vo_list(&a, &[&cern], &[]);
    let s1 = w.site("s1");
    expect_ok(&w.support_vo(&s1, &[&a, &b, &c], 2, "auto"));
    // One signature is not enough.
    expect_fail(&s1.sync(), 1, &["1 valid signature(s)", "2 needed"]);
    let o = s1.run(&["sync", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["vos"][0]["failure"], "verification", "{report}");
    assert_eq!(report["vos"][0]["exit_code"], 1);
    assert_eq!(report["exit_code"], 1);
    assert!(s1.trusted().is_empty());
    // Two signatures by one key are not two: A's signature copied under
    // B's names (at the entry point and beside the generation).
    let vo_dir = w.path("www/atlas-vo");
    let a_sig = vo_dir.join(format!("vo.json.{}.minisig", key_id(&a)));
    for (from, to) in [
        (
            a_sig.clone(),
            vo_dir.join(format!("vo.json.{}.minisig", key_id(&b))),
        ),
        (
            generation_signature(&vo_dir, &a),
            generation_signature(&vo_dir, &b),
        ),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    expect_fail(&s1.sync(), 1, &["1 valid signature(s)"]);
    assert!(s1.trusted().is_empty());
    // A key outside the set does not count, even as a valid signature.
    std::fs::remove_file(vo_dir.join(format!("vo.json.{}.minisig", key_id(&b)))).unwrap();
    std::fs::remove_file(generation_signature(&vo_dir, &b)).unwrap();
    let o = vo_sign(&vo_dir, &outsider);
    expect_ok(&o);
    expect_fail(&s1.sync(), 1, &["1 valid signature(s)"]);
    // Even served under a pinned manager's file name.
    let outsider_sig = generation_signature(&vo_dir, &outsider);
    let b_sig = generation_signature(&vo_dir, &b);
    std::fs::rename(&outsider_sig, &b_sig).unwrap();
    expect_fail(
        &s1.sync(),
        1,
        &["not a pinned VO key", "1 valid signature(s)"],
    );
    std::fs::remove_file(&b_sig).unwrap();
    assert!(s1.trusted().is_empty());
    // Every signature checks with stock minisign, one by one.
    if has_tool("minisign") {
        let pubkey = std::fs::read_to_string(format!("{}.pub", a.display())).unwrap();
        let line = pubkey.lines().nth(1).unwrap();
        let o = std::process::Command::new("minisign")
            .args(["-V", "-m"])
            .arg(vo_dir.join("vo.json"))
            .args(["-x"])
            .arg(&a_sig)
            .args(["-P", line])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // `vmic verify --vo` says the same as the site.
    let (a_pub, b_pub, c_pub) = (
        format!("{}.pub", a.display()),
        format!("{}.pub", b.display()),
        format!("{}.pub", c.display()),
    );
    let verify_vo = || {
        vmic([
            "verify",
            "--vo",
            path_str(&vo_dir),
            "--pubkey",
            &a_pub,
            "--pubkey",
            &b_pub,
            "--pubkey",
            &c_pub,
            "--threshold",
            "2",
        ])
    };
    expect_fail(&verify_vo(), 1, &["1 valid signature(s)", "2 needed"]);
    // A second manager of the set co-signs: accepted.
    expect_ok(&vo_sign(&vo_dir, &b));
    let o = verify_vo();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("signed by 2 of the given keys"),
        "{}",
        stdout(&o)
    );
    expect_ok(&s1.sync());
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn a_replayed_older_vo_list_is_refused_as_a_rollback() {
    let st = start();
    let saved = st.w.path("saved-vo");
    copy_dir(&st.w.path("www/atlas-vo"), &saved);
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    expect_ok(&st.s1.sync());
    // A mirror serves the old list (which does not name desy).
    std::fs::remove_dir_all(st.w.path("www/atlas-vo")).unwrap();
    copy_dir(&saved, &st.w.path("www/atlas-vo"));
    expect_fail(&st.s1.sync(), 1, &["rollback refused"]);
    assert_eq!(st.s1.trusted(), s(&["cern", "desy"]));
    assert!(st.s1.hooks().contains("catalog-refused atlas"));
}

#[test]
fn an_expired_vo_list_is_refused_and_changes_nothing() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list_of("atlas", "1s", &st.manager, &[&desy], &[]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    expect_fail(&st.s1.sync(), 1, &["expired"]);
    assert_eq!(st.s1.trusted(), s(&["cern"]));
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn an_endorser_in_two_vos_stays_trusted_until_the_last_lets_go() {
    let st = start();
    let cms_manager = st.w.key("cms-manager");
    st.w.vo_list_of("cms", "30d", &cms_manager, &[&st.cern], &[]);
    expect_ok(
        &st.w
            .support_vo_named(&st.s1, "cms", &[&cms_manager], 1, "auto"),
    );
    expect_ok(&st.s1.sync());
    st.w.vo_list(&st.manager, &[], &[(&st.cern, "left atlas", "revoke")]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("still trusted otherwise"),
        "{}",
        stdout(&o)
    );
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    st.w.vo_list_of("cms", "30d", &cms_manager, &[], &[]);
    expect_ok(&st.s1.sync());
    assert!(st.s1.trusted().is_empty());
    assert!(st.s1.imported().is_empty());
}

#[test]
fn a_direct_trust_outlives_the_vo_that_listed_the_endorser() {
    let st = start();
    st.w.trust(&st.s1, &st.cern, &[]);
    st.w.vo_list(&st.manager, &[], &[(&st.cern, "left", "revoke")]);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    // Removing the VO leaves the directly trusted endorser alone too.
    expect_ok(&st.s1.run(&["vo", "remove", "atlas"]));
    assert_eq!(st.s1.trusted(), s(&["cern"]));
}

#[test]
fn a_stolen_endorser_key_is_recovered_from_by_the_vo_repinning_it_as_compromised() {
    let st = start();
    // The attacker holds cern's key and serves a catalog with serial 1000.
    let served = st.w.path("www/cern/catalog.json");
    let mut catalog: serde_json::Value = read_json(&served);
    catalog["serial"] = 1000.into();
    catalog["previous_sha256"] = serde_json::Value::Null;
    std::fs::write(&served, serde_json::to_vec_pretty(&catalog).unwrap()).unwrap();
    expect_ok(&sign_file(&served, &st.cern.key));
    expect_ok(&st.s1.sync());
    // The real endorser is locked out: its next catalog is a "rollback".
    std::fs::remove_dir_all(st.w.path("www/cern")).unwrap();
    st.w.publish(&st.cern);
    expect_fail(&st.s1.sync(), 1, &["rollback"]);
    // Recovery: a new key, published afresh, and the VO re-pins it,
    // marking the stolen key compromised.
    let old_pub = st.w.path("keys/cern-stolen.pub");
    std::fs::copy(format!("{}.pub", st.cern.key.display()), &old_pub).unwrap();
    let new_key = st.w.key("cern-2027");
    let cern2 = Endorser {
        name: "cern".into(),
        key: new_key.clone(),
        images: st.cern.images.clone(),
    };
    std::fs::remove_dir_all(st.w.path("www/cern")).unwrap();
    st.w.publish(&cern2);
    let toml = format!(
        "[vo]\nname = \"atlas\"\n[[endorser]]\nname = \"cern\"\npubkey = \"{}.pub\"\nurls = [\"{}\"]\ncompromised = [\"{}\"]\n",
        new_key.display(),
        st.w.url("cern"),
        old_pub.display()
    );
    std::fs::write(st.w.path("atlas.toml"), toml).unwrap();
    expect_ok(&vmic([
        "vo",
        "build",
        path_str(&st.w.path("atlas.toml")),
        "--key",
        path_str(&st.manager),
        "--out",
        path_str(&st.w.path("www/atlas-vo")),
    ]));
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("declared compromised"),
        "{}",
        stdout(&o)
    );
    assert!(st.s1.hooks().contains("key-compromised cern"));
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    // The attacker's key is refused from now on.
    let saved = std::fs::read(&served).unwrap();
    std::fs::write(&served, serde_json::to_vec_pretty(&catalog).unwrap()).unwrap();
    expect_ok(&sign_file(&served, &st.cern.key));
    expect_fail(&st.s1.sync(), 1, &["cern"]);
    std::fs::write(&served, saved).unwrap();
}

fn trusted_key_id(site: &Site, name: &str) -> String {
    let o = site.run(&["trust", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["key_id"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_key_rotation_chain_is_followed_and_the_old_key_is_refused_afterwards() {
    let st = start();
    let out = st.w.path("www/cern");
    // S3 trusts cern directly and does not sync during the rotations.
    let s3 = st.w.site("s3");
    st.w.trust(&s3, &st.cern, &[]);
    expect_ok(&s3.sync());
    let key2 = st.w.key("cern-2");
    expect_ok(&key_rotate(&st.cern.key, &key2, &out));
    // Both signatures of the statement check with stock minisign.
    if has_tool("minisign") {
        let statement = out.join(format!("keys/rotate-{}.json", key_id(&st.cern.key)));
        for (key, sig) in [(&st.cern.key, "minisig"), (&key2, "to.minisig")] {
            let pubkey = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
            let o = std::process::Command::new("minisign")
                .arg("-Vm")
                .arg(&statement)
                .arg("-x")
                .arg(format!("{}.{sig}", statement.display()))
                .args(["-P", pubkey.lines().nth(1).unwrap()])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    // The old key no longer builds this publication.
    let old_build = vmic([
        "build",
        path_str(&st.cern.images),
        "--key",
        path_str(&st.cern.key),
        "--out",
        path_str(&out),
    ]);
    expect_fail(&old_build, 2, &["was rotated to"]);
    let cern2 = Endorser {
        name: "cern".into(),
        key: key2.clone(),
        images: st.cern.images.clone(),
    };
    st.w.publish(&cern2);
    let o = st.s1.sync();
    expect_ok(&o);
    assert_eq!(trusted_key_id(&st.s1, "cern"), key_id(&key2));
    assert!(
        st.s1.hooks().contains("key-rotated cern"),
        "{}",
        st.s1.hooks()
    );
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
    // A second rotation; S3, still pinned to the first key, follows both.
    let key3 = st.w.key("cern-3");
    expect_ok(&key_rotate(&key2, &key3, &out));
    let cern3 = Endorser {
        name: "cern".into(),
        key: key3.clone(),
        images: st.cern.images.clone(),
    };
    st.w.add_image(&cern3, "cern-new", "1", 41);
    st.w.publish(&cern3);
    expect_ok(&s3.sync());
    assert_eq!(trusted_key_id(&s3, "cern"), key_id(&key3));
    assert_eq!(s3.imported(), s(&["cern cern-new@1", "cern cern-os@1"]));
    // The VO's list still names the first key: a stale list, not a re-pin.
    st.w.vo_list(&st.manager, &[&st.cern], &[]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("rotated away from"), "{}", stderr(&o));
    assert_eq!(trusted_key_id(&st.s1, "cern"), key_id(&key3));
    // Whoever still holds the first key cannot sign for cern any more.
    let served = out.join("catalog.json");
    let mut catalog: serde_json::Value = read_json(&served);
    catalog["serial"] = 9999.into();
    std::fs::write(&served, serde_json::to_vec_pretty(&catalog).unwrap()).unwrap();
    expect_ok(&sign_file(&served, &st.cern.key));
    expect_fail(&s3.sync(), 1, &["cern"]);
    assert_eq!(trusted_key_id(&s3, "cern"), key_id(&key3));
}

#[test]
fn a_rotation_statement_not_signed_by_the_new_key_is_refused() {
    let w = World::new();
    let cern = w.endorser("cern");
    let s1 = w.site("s1");
    w.trust(&s1, &cern, &[]);
    expect_ok(&s1.sync());
    // The attacker has the old key only and rotates to a key of theirs;
    // the "new key" signature is made by a third key.
    let theirs = w.key("attacker");
    let third = w.key("third");
    let out = w.path("www/cern");
    expect_ok(&key_rotate(&cern.key, &theirs, &out));
    let statement = out.join(format!("keys/rotate-{}.json", key_id(&cern.key)));
    expect_ok(&sign_file(&statement, &third));
    std::fs::rename(
        out.join(format!("keys/rotate-{}.json.minisig", key_id(&cern.key))),
        out.join(format!("keys/rotate-{}.json.to.minisig", key_id(&cern.key))),
    )
    .unwrap();
    expect_ok(&sign_file(&statement, &cern.key));
    let attacker = Endorser {
        name: "cern".into(),
        key: theirs,
        images: cern.images.clone(),
    };
    w.publish(&attacker);
    expect_fail(&s1.sync(), 1, &["signature by the new key"]);
    assert_eq!(trusted_key_id(&s1, "cern"), key_id(&cern.key));
}

#[test]
fn replacement_with_identical_bytes_is_neither_approved_again_nor_downloaded_again() {
    let w = World::new();
    let manager = w.key("atlas-manager");
    let cern = w.endorser("cern");
    w.vo_list(&manager, &[&cern], &[]);
    let s1 = w.site("s1");
    let toml = s1.dir.join("site.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("approve = \"auto\"", "approve = \"manual\"", 1),
    )
    .unwrap();
    expect_ok(&w.support_vo(&s1, &[&manager], 1, "auto"));
    expect_ok(&s1.sync());
    expect_ok(&s1.run(&["approve", "cern-os"]));
    expect_ok(&s1.sync());
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
    // desy re-endorses the same bytes; its served copy is not even there.
    let desy = Endorser {
        name: "desy".into(),
        key: w.key("desy"),
        images: w.path("src/desy"),
    };
    copy_dir(&cern.images, &desy.images);
    w.publish(&desy);
    std::fs::remove_file(w.path("www/desy/images/cern-os.img")).unwrap();
    w.vo_list(&manager, &[&desy], &[(&cern, "replaced by desy", "revoke")]);
    let o = s1.sync();
    expect_ok(&o);
    assert_eq!(s1.imported(), s(&["desy cern-os@1"]));
    let log = s1.run(&["log"]);
    assert!(
        stdout(&log).contains("reused-local-copy"),
        "{}",
        stdout(&log)
    );
    assert!(
        stdout(&log).contains("policy.carry_approval"),
        "{}",
        stdout(&log)
    );
    // The copy left behind by cern's withdrawal is whole and verifies.
    expect_ok(&s1.run(&["reverify"]));
}

#[test]
fn uc_1_5_1_images_stay_through_the_grace_period_of_an_endorser_on_holiday() {
    let w = World::new();
    let e = w.endorser("cern");
    expect_ok(&w.build(&e, &["--expires", "2s"]));
    let s1 = w.site("s1");
    w.trust(&s1, &e, &["--grace", "1h"]);
    expect_ok(&s1.sync());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // Loud (exit 1, every run), but the images stay.
    let o = s1.sync();
    expect_fail(&o, 1, &["grace period until"]);
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
    // Without a grace period, the expiry withdraws them.
    expect_ok(&s1.run(&["trust", "edit", "cern", "--grace", "0"]));
    expect_fail(&s1.sync(), 1, &["expired"]);
    assert!(s1.imported().is_empty());
    assert!(s1.hooks().contains("expire cern cern-os"));
}

#[test]
fn a_vo_manager_key_rotation_is_followed_and_the_old_key_is_refused_afterwards() {
    let st = start();
    let vo_dir = st.w.path("www/atlas-vo");
    let m2 = st.w.key("atlas-manager-2");
    expect_ok(&key_rotate(&st.manager, &m2, &vo_dir));
    let desy = st.w.endorser("desy");
    // The VO tool refuses the old key from now on.
    let toml = st.w.path("atlas.toml");
    let old = vmic([
        "vo",
        "build",
        path_str(&toml),
        "--key",
        path_str(&st.manager),
        "--out",
        path_str(&vo_dir),
    ]);
    expect_fail(&old, 2, &["was rotated to"]);
    st.w.vo_list(&m2, &[&st.cern, &desy], &[]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("manager key(s) rotated"),
        "{}",
        stdout(&o)
    );
    assert_eq!(st.s1.trusted(), s(&["cern", "desy"]));
    assert!(st.s1.hooks().contains("key-rotated atlas"));
    let list = st.s1.run(&["vo", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let m2_pub = std::fs::read_to_string(format!("{}.pub", m2.display())).unwrap();
    assert_eq!(v[0]["pubkeys"][0], m2_pub.lines().nth(1).unwrap());
    // A list signed by the old manager key alone no longer counts.
    std::fs::remove_dir_all(&vo_dir).unwrap();
    st.w.vo_list(&st.manager, &[&st.cern], &[]);
    expect_fail(&st.s1.sync(), 1, &["valid signature"]);
    assert_eq!(st.s1.trusted(), s(&["cern", "desy"]));
}

#[test]
fn another_vos_list_signed_by_the_same_managers_is_refused() {
    let st = start();
    let desy = st.w.endorser("desy");
    std::fs::remove_dir_all(st.w.path("www/atlas-vo")).unwrap();
    st.w.vo_list_of("cms", "30d", &st.manager, &[&desy], &[]);
    std::fs::rename(st.w.path("www/cms-vo"), st.w.path("www/atlas-vo")).unwrap();
    expect_fail(&st.s1.sync(), 1, &["VO cms's, not atlas's"]);
    assert_eq!(st.s1.trusted(), s(&["cern"]));
}

#[test]
fn a_vo_cannot_repin_an_endorser_the_site_trusts_directly_with_another_key() {
    let w = World::new();
    let manager = w.key("atlas-manager");
    let cern = w.endorser("cern");
    let s1 = w.site("s1");
    w.trust(&s1, &cern, &[]);
    // The VO names another key for "cern".
    let impostor = Endorser {
        name: "cern".into(),
        key: w.key("impostor"),
        images: cern.images.clone(),
    };
    w.vo_list(&manager, &[&impostor], &[]);
    expect_ok(&w.support_vo(&s1, &[&manager], 1, "auto"));
    let o = s1.sync();
    expect_ok(&o);
    assert!(
        stderr(&o).contains("(not through this VO); not applied"),
        "{}",
        stderr(&o)
    );
    assert_eq!(trusted_key_id(&s1, "cern"), key_id(&cern.key));
    assert_eq!(s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn a_vo_list_close_to_expiry_is_announced_once_and_trust_list_shows_the_history() {
    let st = start();
    st.w.vo_list_of("atlas", "3d", &st.manager, &[&st.cern], &[]);
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("should re-sign it"), "{}", stderr(&o));
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.hooks().matches("expiring atlas").count(), 1);
    // trust list: sources, VOs, serial, issued, expires, last success.
    let o = st.s1.run(&["trust", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cern = &v[0];
    assert_eq!(cern["vos"][0], "atlas");
    assert_eq!(cern["direct"], false);
    assert_eq!(cern["serial"], 1);
    for field in ["issued", "expires", "last_success", "url"] {
        assert!(cern[field].is_string(), "{field}: {cern}");
    }
    let text = stdout(&st.s1.run(&["trust", "list"]));
    assert!(
        text.contains("via=vo:atlas") && text.contains("issued"),
        "{text}"
    );
}

#[test]
fn an_endorser_its_vo_dropped_is_still_removed_after_an_interrupted_sync() {
    let st = start();
    // desy replaces cern; desy's big image comes slowly from a second server.
    let server = fault::FaultServer::start(st.w.path("www"));
    let desy = st.w.endorser("desy");
    std::fs::write(desy.images.join("desy-big.img"), pattern(4 << 20, 99)).unwrap();
    st.w.publish(&desy);
    let toml = format!(
        "[vo]\nname = \"atlas\"\n[[endorser]]\nname = \"desy\"\npubkey = \"{}.pub\"\nurls = [\"{}/desy/\"]\n[[removed]]\nname = \"cern\"\npubkey = \"{}.pub\"\nreason = \"replaced\"\nimages = \"revoke\"\n",
        desy.key.display(),
        server.url().trim_end_matches('/'),
        st.cern.key.display()
    );
    std::fs::write(st.w.path("atlas.toml"), toml).unwrap();
    let vo_out = st.w.path("www/atlas-vo");
    expect_ok(&vmic([
        "vo",
        "build",
        path_str(&st.w.path("atlas.toml")),
        "--key",
        path_str(&st.manager),
        "--out",
        path_str(&vo_out),
    ]));
    server.set(fault::Fault::Trickle("desy-big".into(), 16 << 10));
    let child = vmic_command()
        .args(["--site", path_str(&st.s1.dir), "sync"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server
        .body_bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed)
        < 256 << 10
    {
        assert!(
            std::time::Instant::now() < deadline,
            "download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    expect_fail(&o, 3, &["interrupted by SIGTERM"]);
    // The old endorser stays until its replacement is in place.
    assert!(
        st.s1.imported().contains(&"cern cern-os@1".to_string()),
        "{:?} {}",
        st.s1.holds(),
        stdout(&st.s1.run(&["log"]))
    );
    server.set(fault::Fault::None);
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.trusted(), s(&["desy"]));
    let imported = st.s1.imported();
    assert_eq!(imported.len(), 2, "{imported:?}");
    assert!(
        imported.iter().all(|i| i.starts_with("desy ")),
        "{imported:?}"
    );
}

#[test]
fn a_vo_moving_an_endorsers_sources_or_key_is_applied_and_logged() {
    let st = start();
    // The endorser moves to a new server (a copy of its publication).
    copy_dir(&st.w.path("www/cern"), &st.w.path("www/cern-new-home"));
    let toml = format!(
        "[vo]\nname = \"atlas\"\n[[endorser]]\nname = \"cern\"\npubkey = \"{}.pub\"\nurls = [\"{}\", \"{}\"]\n",
        st.cern.key.display(),
        st.w.url("cern-new-home"),
        st.w.url("cern")
    );
    std::fs::write(st.w.path("atlas.toml"), toml).unwrap();
    let build_list = || {
        expect_ok(&vmic([
            "vo",
            "build",
            path_str(&st.w.path("atlas.toml")),
            "--key",
            path_str(&st.manager),
            "--out",
            path_str(&st.w.path("www/atlas-vo")),
        ]))
    };
    build_list();
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(stdout(&o).contains("cern: sources"), "{}", stdout(&o));
    let list = st.s1.run(&["trust", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["url"], st.w.url("cern-new-home"));
    assert_eq!(v[0]["mirrors"][0], st.w.url("cern"));
    assert!(stdout(&st.s1.run(&["log"])).contains("vo-endorser-updated"));
    // A routine key change through the VO: re-pinned, memory carried over.
    let key2 = st.w.key("cern-2");
    let cern2 = Endorser {
        name: "cern".into(),
        key: key2.clone(),
        images: st.cern.images.clone(),
    };
    std::fs::remove_dir_all(st.w.path("www/cern-new-home")).unwrap();
    std::fs::rename(st.w.path("www/cern"), st.w.path("www/cern-new-home")).unwrap();
    let out = st.w.path("www/cern-new-home");
    // The endorser continues its chain under the new key (serial 2).
    expect_ok(&key_rotate(&st.cern.key, &key2, &out));
    std::fs::remove_dir_all(out.join("keys")).unwrap();
    expect_ok(&vmic([
        "build",
        path_str(&cern2.images),
        "--key",
        path_str(&key2),
        "--out",
        path_str(&out),
    ]));
    let toml = std::fs::read_to_string(st.w.path("atlas.toml"))
        .unwrap()
        .replace(
            &format!("{}.pub", st.cern.key.display()),
            &format!("{}.pub", key2.display()),
        );
    std::fs::write(st.w.path("atlas.toml"), toml).unwrap();
    build_list();
    let o = st.s1.sync();
    expect_ok(&o);
    assert!(
        st.s1.hooks().contains("key-rotated cern"),
        "{}",
        st.s1.hooks()
    );
    assert_eq!(trusted_key_id(&st.s1, "cern"), key_id(&key2));
    let v: serde_json::Value =
        serde_json::from_slice(&st.s1.run(&["trust", "list", "--json"]).stdout).unwrap();
    assert_eq!(v[0]["serial"], 2, "memory carried over: {v}");
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn a_bundle_carried_to_a_site_with_no_network_syncs_with_the_same_checks() {
    let st = start();
    let bundle = st.w.path("bundle");
    let o = st.s1.run(&["bundle", "--out", path_str(&bundle)]);
    expect_ok(&o);
    let saved_v1 = st.w.path("bundle-v1");
    copy_dir(&bundle, &saved_v1);
    // The air-gapped site trusts the same key under its own name, with a
    // source it cannot reach.
    let air = st.w.site("air");
    let pubkey = format!("{}.pub", st.cern.key.display());
    expect_ok(&air.run(&[
        "trust",
        "add",
        "cern-offline",
        "--pubkey",
        &pubkey,
        "--url",
        "http://127.0.0.1:9/",
    ]));
    let other = st.w.endorser("elsewhere");
    st.w.trust(&air, &other, &[]);
    let o = air.run(&["sync", "--from", path_str(&bundle)]);
    expect_ok(&o);
    assert_eq!(air.imported(), s(&["cern-offline cern-os@1"]));
    assert!(stderr(&o).contains("not in bundle"), "{}", stderr(&o));
    // A newer bundle, then the older one carried in again: refused.
    st.w.add_image(&st.cern, "cern-new", "1", 51);
    st.w.publish(&st.cern);
    expect_ok(&st.s1.sync());
    std::fs::remove_dir_all(&bundle).unwrap();
    expect_ok(&st.s1.run(&["bundle", "--out", path_str(&bundle), "cern"]));
    expect_ok(&air.run(&["sync", "--from", path_str(&bundle)]));
    assert!(
        air.imported()
            .contains(&"cern-offline cern-new@1".to_string())
    );
    expect_fail(
        &air.run(&["sync", "--from", path_str(&saved_v1)]),
        1,
        &["rollback"],
    );
    // Bytes changed on the medium are caught like any download.
    let fresh = st.w.site("fresh");
    expect_ok(&fresh.run(&[
        "trust",
        "add",
        "cern",
        "--pubkey",
        &pubkey,
        "--url",
        "http://127.0.0.1:9/",
    ]));
    let image = bundle.join("cern/images/cern-os.img");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&image, bytes).unwrap();
    expect_fail(
        &fresh.run(&["sync", "--from", path_str(&bundle)]),
        1,
        &["quarantined"],
    );
    assert_eq!(fresh.imported(), s(&["cern cern-new@1"]));
    // The connected site's store was not touched by the edit.
    expect_ok(&st.s1.run(&["reverify"]));
}

#[test]
fn a_vo_list_source_serving_a_forged_list_is_passed_over_and_reported() {
    let w = World::new();
    let manager = w.key("atlas-manager");
    let cern = w.endorser("cern");
    w.vo_list(&manager, &[&cern], &[]);
    // A first source serving a list edited after signing (an extra endorser).
    let forged = w.path("www/forged-vo");
    copy_dir(&w.path("www/atlas-vo"), &forged);
    // (The generation the signatures name: what readers fetch.)
    let list = vo_generation(&forged);
    let text = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&list, text.replace("\"cern\"", "\"evil\"")).unwrap();
    let s1 = w.site("s1");
    let pubkey = format!("{}.pub", manager.display());
    expect_ok(&s1.run(&[
        "vo",
        "add",
        "atlas",
        "--pubkey",
        &pubkey,
        "--url",
        &w.url("forged-vo"),
        "--url",
        &w.url("atlas-vo"),
    ]));
    let o = s1.sync();
    expect_ok(&o);
    assert!(
        stderr(&o).contains("forged-vo/ passed over"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s1.trusted(), s(&["cern"]));
}

#[test]
fn a_vo_list_is_mirrored_verified_and_sites_sync_from_the_mirror() {
    let w = World::new();
    let (a, b) = (w.key("mgr-a"), w.key("mgr-b"));
    let cern = w.endorser("cern");
    w.vo_list(&a, &[&cern], &[]);
    let vo_dir = w.path("www/atlas-vo");
    expect_ok(&vo_sign(&vo_dir, &b));
    let mirror_dir = w.path("www/atlas-vo-mirror");
    let (a_pub, b_pub) = (
        format!("{}.pub", a.display()),
        format!("{}.pub", b.display()),
    );
    let mirror = || {
        vmic([
            "mirror",
            "--vo",
            w.url("atlas-vo").as_str(),
            path_str(&mirror_dir),
            "--pubkey",
            &a_pub,
            "--pubkey",
            &b_pub,
            "--threshold",
            "2",
        ])
    };
    expect_ok(&mirror());
    let s1 = w.site("s1");
    expect_ok(&s1.run(&[
        "vo",
        "add",
        "atlas",
        "--pubkey",
        &a_pub,
        "--pubkey",
        &b_pub,
        "--threshold",
        "2",
        "--url",
        &w.url("atlas-vo-mirror"),
    ]));
    expect_ok(&s1.sync());
    assert_eq!(s1.trusted(), s(&["cern"]));
    // A list edited at the source is refused; the mirror keeps its copy.
    let list = vo_generation(&vo_dir);
    let text = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&list, text.replace("\"cern\"", "\"evil\"")).unwrap();
    expect_fail(&mirror(), 1, &["valid signature"]);
    let kept = std::fs::read_to_string(mirror_dir.join("vo.json")).unwrap();
    assert!(kept.contains("\"cern\"") && !kept.contains("evil"));
    expect_ok(&s1.sync());
}

#[test]
fn a_vo_removed_and_supported_again_is_reconciled_with_the_same_list() {
    let st = start();
    let o = st.s1.run(&["vo", "remove", "atlas"]);
    expect_ok(&o);
    assert!(
        stdout(&o).contains("1 endorser(s) removed"),
        "{}",
        stdout(&o)
    );
    assert!(st.s1.trusted().is_empty());
    assert!(st.s1.imported().is_empty());
    // The rollback memory of the list stayed; the reconciliation is redone.
    expect_ok(&st.w.support_vo(&st.s1, &[&st.manager], 1, "auto"));
    expect_ok(&st.s1.sync());
    assert_eq!(st.s1.trusted(), s(&["cern"]));
    assert_eq!(st.s1.imported(), s(&["cern cern-os@1"]));
}

#[test]
fn a_bundle_carries_the_vo_list_to_an_air_gapped_site_of_the_vo() {
    let st = start();
    let desy = st.w.endorser("desy");
    st.w.vo_list(&st.manager, &[&st.cern, &desy], &[]);
    expect_ok(&st.s1.sync());
    let bundle = st.w.path("bundle");
    expect_ok(&st.s1.run(&["bundle", "--out", path_str(&bundle)]));
    // The air-gapped site knows only the VO's manager key; its sources are
    // unreachable.
    let air = st.w.site("air");
    let manager_pub = format!("{}.pub", st.manager.display());
    expect_ok(&air.run(&[
        "vo",
        "add",
        "atlas",
        "--pubkey",
        &manager_pub,
        "--url",
        "http://127.0.0.1:9/",
    ]));
    let o = air.run(&["sync", "--from", path_str(&bundle)]);
    expect_ok(&o);
    assert_eq!(air.trusted(), s(&["cern", "desy"]));
    assert_eq!(air.imported(), s(&["cern cern-os@1", "desy desy-os@1"]));
    // A VO list edited on the medium is refused like any forged list.
    let list = bundle.join("vos/atlas/vo.json");
    let text = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&list, text.replace("\"desy\"", "\"evil\"")).unwrap();
    let other = st.w.site("other");
    expect_ok(&other.run(&[
        "vo",
        "add",
        "atlas",
        "--pubkey",
        &manager_pub,
        "--url",
        "http://127.0.0.1:9/",
    ]));
    expect_fail(
        &other.run(&["sync", "--from", path_str(&bundle)]),
        1,
        &["valid signature"],
    );
    assert!(other.trusted().is_empty());
}

#[test]
fn a_bundle_carries_the_rotation_chain_to_a_site_pinned_to_the_old_key() {
    let st = start();
    // The air-gapped site trusted cern (old key) from an earlier bundle.
    let air = st.w.site("air");
    let old_pub = format!("{}.pub", st.cern.key.display());
    expect_ok(&air.run(&[
        "trust",
        "add",
        "cern",
        "--pubkey",
        &old_pub,
        "--url",
        "http://127.0.0.1:9/",
    ]));
    let bundle = st.w.path("bundle");
    expect_ok(&st.s1.run(&["bundle", "--out", path_str(&bundle)]));
    expect_ok(&air.run(&["sync", "--from", path_str(&bundle)]));
    // cern rotates its key; the connected site follows.
    let key2 = st.w.key("cern-2");
    let out = st.w.path("www/cern");
    expect_ok(&key_rotate(&st.cern.key, &key2, &out));
    let cern2 = Endorser {
        name: "cern".into(),
        key: key2.clone(),
        images: st.cern.images.clone(),
    };
    st.w.add_image(&cern2, "cern-new", "1", 61);
    st.w.publish(&cern2);
    expect_ok(&st.s1.sync());
    std::fs::remove_dir_all(&bundle).unwrap();
    expect_ok(&st.s1.run(&["bundle", "--out", path_str(&bundle)]));
    // The air-gapped site, still pinned to the old key, finds the
    // publication and follows the chain the bundle carries.
    expect_ok(&air.run(&["sync", "--from", path_str(&bundle)]));
    assert_eq!(trusted_key_id(&air, "cern"), key_id(&key2));
    assert!(air.imported().contains(&"cern cern-new@1".to_string()));
    assert!(air.hooks().contains("key-rotated cern"));
}

#[test]
fn a_mirror_follows_and_carries_the_rotation_chain_of_its_endorser() {
    let st = start();
    let mirror_dir = st.w.path("www/cern-mirror");
    let old_pub = format!("{}.pub", st.cern.key.display());
    let mirror = || {
        vmic([
            "mirror",
            st.w.url("cern").as_str(),
            path_str(&mirror_dir),
            "--pubkey",
            &old_pub,
        ])
    };
    expect_ok(&mirror());
    let key2 = st.w.key("cern-2");
    expect_ok(&key_rotate(&st.cern.key, &key2, &st.w.path("www/cern")));
    let cern2 = Endorser {
        name: "cern".into(),
        key: key2.clone(),
        images: st.cern.images.clone(),
    };
    st.w.publish(&cern2);
    // The operator's key is the old one: the mirror follows the chain.
    expect_ok(&mirror());
    assert!(
        mirror_dir
            .join(format!("keys/rotate-{}.json", key_id(&st.cern.key)))
            .is_file()
    );
    // A site pinned to the old key follows it at the mirror too.
    let s3 = st.w.site("s3");
    expect_ok(&s3.run(&[
        "trust",
        "add",
        "cern",
        "--pubkey",
        &old_pub,
        "--url",
        &st.w.url("cern-mirror"),
    ]));
    expect_ok(&s3.sync());
    assert_eq!(trusted_key_id(&s3, "cern"), key_id(&key2));
    assert_eq!(s3.imported(), s(&["cern cern-os@1"]));
}

/// The generation `lists/<sha256>.json` of the list now in `vo_dir`.
fn vo_generation(vo_dir: &Path) -> PathBuf {
    let bytes = std::fs::read(vo_dir.join("vo.json")).unwrap();
    let sha = vmic_format::digest::Sha256Digest::of(&bytes);
    vo_dir.join(format!("lists/{sha}.json"))
}

/// The signature by `key`'s manager beside that generation.
fn generation_signature(vo_dir: &Path, key: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}.{}.minisig",
        vo_generation(vo_dir).display(),
        key_id(key)
    ))
}

#[test]
fn a_vo_list_awaiting_its_second_signature_leaves_sites_on_the_previous_list() {
    let w = World::new();
    let (a, b) = (w.key("mgr-a"), w.key("mgr-b"));
    let cern = w.endorser("cern");
    w.vo_list(&a, &[&cern], &[]);
    let vo_dir = w.path("www/atlas-vo");
    expect_ok(&vo_sign(&vo_dir, &b));
    let s1 = w.site("s1");
    expect_ok(&w.support_vo(&s1, &[&a, &b], 2, "auto"));
    expect_ok(&s1.sync());
    assert_eq!(s1.trusted(), s(&["cern"]));
    // Manager A publishes list 2; B has not co-signed yet. Sites stay on
    // list 1, whole, without an alarm.
    let desy = w.endorser("desy");
    w.vo_list(&a, &[&cern, &desy], &[]);
    let o = s1.sync();
    expect_ok(&o);
    assert!(
        stdout(&o).contains("VO atlas list serial 1: ok"),
        "{}",
        stdout(&o)
    );
    assert_eq!(s1.trusted(), s(&["cern"]));
    // B co-signs. Even with the plain vo.json broken mid-upload, sites read
    // the generation the signatures name, and take list 2.
    expect_ok(&vo_sign(&vo_dir, &b));
    std::fs::write(vo_dir.join("vo.json"), b"{\"half\":").unwrap();
    expect_ok(&s1.sync());
    assert_eq!(s1.trusted(), s(&["cern", "desy"]));
}

/// `vmic key rotate --key OLD --new-key NEW --out DIR`.
fn key_rotate(old: &Path, new: &Path, out: &Path) -> Output {
    vmic([
        "key",
        "rotate",
        "--key",
        path_str(old),
        "--new-key",
        path_str(new),
        "--out",
        path_str(out),
    ])
}
