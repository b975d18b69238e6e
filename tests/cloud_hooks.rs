//! The cloud hook adapters in `contrib/hooks/` against the real services
//! (.ci/run installs them): an OpenStack Glance API (Debian's `glance-api`
//! with SQLite, the file store and no authentication, driven by
//! `python3-openstackclient`) and `libvirtd` with a directory pool. A sync
//! that imports, replaces and revokes leaves the service holding exactly
//! the imported images, also after an event is delivered twice.
//! OpenNebula cannot run here: its adapter runs against a recording
//! stand-in for `oneimage`, which this test says it is.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::Harness;
use common::*;

fn hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/hooks")
        .join(name)
}

/// A site with images `a` (version 1) and `b`, using `hook` with `env`.
fn site(hook_path: &Path) -> Harness {
    let h = Harness::new(&[("a.img", 65_536), ("b.img", 131_072)]);
    std::fs::write(h.path("images/a.img.toml"), "id = \"a\"\nversion = \"1\"\n").unwrap();
    std::fs::write(h.path("images/b.img.toml"), "id = \"b\"\nversion = \"1\"\n").unwrap();
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    h.hook_command(hook_path);
    h
}

/// The imported images' `endorser-id-version` names, sorted.
fn imported(h: &Harness) -> Vec<String> {
    let mut names: Vec<String> = h
        .images()
        .iter()
        .filter(|i| i["state"] == "imported")
        .map(|i| {
            format!(
                "vmic-{}-{}-{}",
                i["endorser"].as_str().unwrap(),
                i["id"].as_str().unwrap(),
                i["version"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

/// Import a@1 and b@1; then a@2 replaces a@1 and b is revoked; then the
/// last import and the revocation are delivered once more by hand.
fn lifecycle(h: &Harness, env: &[(&str, &str)], held: &dyn Fn() -> Vec<String>) {
    expect_ok(&h.run_env(&["sync"], env));
    assert_eq!(held(), imported(h));
    assert_eq!(held().len(), 2);
    std::fs::write(h.path("images/a.img"), vec![7u8; 65_536]).unwrap();
    std::fs::write(h.path("images/a.img.toml"), "id = \"a\"\nversion = \"2\"\n").unwrap();
    std::fs::remove_file(h.path("images/b.img")).unwrap();
    std::fs::remove_file(h.path("images/b.img.toml")).unwrap();
    std::fs::write(
        h.path("images/catalog.toml"),
        "[[revoke]]\nid = \"b\"\nreason = \"gone\"\n",
    )
    .unwrap();
    h.publish();
    expect_ok(&h.run_env(&["sync"], env));
    assert_eq!(held(), imported(h));
    assert_eq!(held(), ["vmic-demo-a-2"]);
    // Delivered twice: the same import and the same revocation again.
    let a = h
        .images()
        .into_iter()
        .find(|i| i["id"] == "a" && i["state"] == "imported")
        .unwrap();
    let store = h.path("site/store").join(a["store_path"].as_str().unwrap());
    let size = a["size"].to_string();
    let again = |event: &str, id: &str, version: &str| {
        let mut cmd = Command::new(hook_for_env(env));
        cmd.envs(env.iter().copied())
            .env("VMIC_EVENT", event)
            .env("VMIC_ENDORSER", "demo")
            .env("VMIC_IMAGE_ID", id)
            .env("VMIC_IMAGE_VERSION", version)
            .env("VMIC_IMAGE_PATH", &store)
            .env("VMIC_IMAGE_SHA256", a["sha256"].as_str().unwrap())
            .env("VMIC_IMAGE_SIZE", &size)
            .env("VMIC_IMAGE_FORMAT", a["format"].as_str().unwrap())
            .env("VMIC_REASON", "delivered again");
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{event} {id}@{version} again: {}",
            stderr(&o)
        );
    };
    again("import", "a", "2");
    again("revoke", "b", "1");
    again("revoke", "a", "1");
    assert_eq!(held(), ["vmic-demo-a-2"]);
}

/// The adapter a test's environment names (set as `VMIC_TEST_HOOK`).
fn hook_for_env(env: &[(&str, &str)]) -> PathBuf {
    PathBuf::from(env.iter().find(|(k, _)| *k == "VMIC_TEST_HOOK").unwrap().1)
}

struct Service {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// glance-api on 127.0.0.1 with SQLite, the file store and no Keystone
/// (the recipe in ../shared/notes checked on these machines).
fn glance() -> (Service, String) {
    require_tool("glance-api");
    require_tool("openstack");
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path();
    for sub in ["images", "lock", "staging"] {
        std::fs::create_dir_all(g.join(sub)).unwrap();
    }
    let port = free_port();
    let conf = g.join("glance-api.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\nworkers = 1\nlog_file = {g}/glance-api.log\nnode_staging_uri = file://{g}/staging\n\
             [database]\nconnection = sqlite:///{g}/glance.sqlite\n\
             [glance_store]\nstores = file\ndefault_store = file\nfilesystem_store_datadir = {g}/images\n\
             [oslo_concurrency]\nlock_path = {g}/lock\n\
             [paste_deploy]\nflavor =\nconfig_file = /etc/glance/glance-api-paste.ini\n",
            g = g.display()
        ),
    )
    .unwrap();
    let synced = Command::new("glance-manage")
        .arg("--config-file")
        .arg(&conf)
        .arg("db_sync")
        .output()
        .unwrap();
    assert!(synced.status.success(), "{}", stderr(&synced));
    let child = Command::new("glance-api")
        .arg("--config-file")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("glance-api", || {
        ureq::get(format!("{url}/healthcheck"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    (Service { child, _dir: dir }, url)
}

#[test]
fn glance_holds_exactly_the_imported_images() {
    let (_glance, url) = glance();
    let openstack = format!("openstack --os-auth-type none --os-endpoint {url}");
    let adapter = hook("glance.sh");
    let h = site(&adapter);
    let env = [
        ("VMIC_OPENSTACK", openstack.as_str()),
        ("VMIC_TEST_HOOK", path_str(&adapter)),
        ("HOME", path_str(h.tmp.path())),
    ];
    let held = || {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("{openstack} image list -f value -c Name"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let mut names: Vec<String> = stdout(&o).lines().map(String::from).collect();
        names.sort();
        names
    };
    lifecycle(&h, &env, &held);
    // The image carries the properties a reconciler matches on.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("{openstack} image show vmic-demo-a-2 -f json"))
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let properties = shown["properties"].to_string();
    assert!(
        properties.contains("vmic_sha256") && properties.contains("vmic_endorser"),
        "{shown}"
    );
}

/// libvirtd with its socket in a temporary directory and a transient
/// directory pool (no KVM needed).
fn libvirt() -> (Service, String, PathBuf) {
    require_tool("libvirtd");
    require_tool("virsh");
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().to_path_buf();
    std::fs::create_dir_all(l.join("run")).unwrap();
    std::fs::create_dir_all(l.join("pool")).unwrap();
    let conf = l.join("libvirtd.conf");
    std::fs::write(
        &conf,
        format!(
            "unix_sock_dir = \"{}/run\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
            l.display()
        ),
    )
    .unwrap();
    let child = Command::new("libvirtd")
        .arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(l.join("libvirtd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uri = format!("qemu:///system?socket={}/run/libvirt-sock", l.display());
    wait_until("libvirtd", || {
        Command::new("virsh")
            .args(["-c", &uri, "uri"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let pool = Command::new("virsh")
        .args(["-c", &uri, "pool-create-as", "vmic", "dir", "--target"])
        .arg(l.join("pool"))
        .output()
        .unwrap();
    assert!(pool.status.success(), "{}", stderr(&pool));
    (Service { child, _dir: dir }, uri, l.join("pool"))
}

#[test]
fn a_libvirt_pool_holds_exactly_the_imported_images() {
    let (_libvirtd, uri, pool_dir) = libvirt();
    let adapter = hook("libvirt-pool.sh");
    let h = site(&adapter);
    let env = [
        ("VMIC_LIBVIRT_URI", uri.as_str()),
        ("VMIC_LIBVIRT_POOL", "vmic"),
        ("VMIC_TEST_HOOK", path_str(&adapter)),
    ];
    let held = || {
        let o = Command::new("virsh")
            .args(["-q", "-c", &uri, "vol-list", "vmic"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let mut names: Vec<String> = stdout(&o)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.trim_end_matches(".raw").to_string())
            .collect();
        names.sort();
        names
    };
    lifecycle(&h, &env, &held);
    // The volume holds the imported bytes.
    let a = h
        .images()
        .into_iter()
        .find(|i| i["id"] == "a" && i["state"] == "imported")
        .unwrap();
    let store = h.path("site/store").join(a["store_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(pool_dir.join("vmic-demo-a-2.raw")).unwrap(),
        std::fs::read(store).unwrap()
    );
}

/// OpenNebula cannot run here: `oneimage` is a recording stand-in that
/// keeps one file per image and logs every call. What is checked is the
/// adapter's commands and its idempotence, not OpenNebula.
#[test]
fn the_opennebula_adapter_runs_the_documented_commands_against_a_stand_in() {
    let adapter = hook("opennebula.sh");
    let h = site(&adapter);
    let bin = h.path("fake-bin");
    let images = h.path("fake-one");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let stand_in = bin.join("oneimage");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n# Stand-in for OpenNebula's oneimage (not the real service).\n\
             echo \"$*\" >> {log}\n\
             case \"$1\" in\n\
               show) [ -e {db}/\"$2\" ] ;;\n\
               delete) [ -e {db}/\"$2\" ] && rm {db}/\"$2\" ;;\n\
               create) shift; while [ $# -gt 0 ]; do [ \"$1\" = --name ] && name=$2; shift; done; touch {db}/\"$name\" ;;\n\
             esac\n",
            log = h.path("oneimage.log").display(),
            db = images.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.as_str()),
        ("VMIC_ONE_DATASTORE", "images"),
        ("VMIC_TEST_HOOK", path_str(&adapter)),
    ];
    let held = || {
        let mut names: Vec<String> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    lifecycle(&h, &env, &held);
    let log = std::fs::read_to_string(h.path("oneimage.log")).unwrap();
    assert!(log.contains("create --name vmic-demo-a-2 --path "), "{log}");
    assert!(log.contains("--datastore images --type OS"), "{log}");
    assert_eq!(
        log.matches("create --name vmic-demo-a-2").count(),
        1,
        "{log}"
    );
}
