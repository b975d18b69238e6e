//! `vmic export simplestreams|hepix`: a publication in the formats that
//! existing tools consume (sstream-mirror and glance-simplestreams-sync;
//! vmcatcher and cloudkeeper), made from its catalog once authenticated.

use std::path::PathBuf;

use vmic_endorser::export::{X509Identity, hepix, simplestreams, smime_sign};
use vmic_engine::fetch::{HttpClient, HttpConfig};
use vmic_engine::hashing::Engine;
use vmic_engine::publication::Publication;
use vmic_format::error::{Error, Result};
use vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES;

use super::password::load_public_key;
use super::{JobsArg, Output};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write streams/v1/index.json and a products:1.0 file into the
    /// publication directory DIR, for simplestreams tools.
    Simplestreams {
        /// The publication directory (the OUT_DIR of `vmic build`).
        dir: PathBuf,
        /// The endorser's public key: the catalog is authenticated first.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// The simplestreams content id (default: vmic.<key id>:images).
        #[arg(long, value_name = "ID")]
        content_id: Option<String>,
    },
    /// Write a HEPiX image list (hv:imagelist JSON, for vmcatcher and
    /// cloudkeeper) to OUT, with SHA-512 digests, optionally S/MIME-signed.
    Hepix {
        /// The list to write.
        out: PathBuf,
        /// The publication directory (the OUT_DIR of `vmic build`).
        #[arg(long, value_name = "DIR", default_value = ".")]
        publication: PathBuf,
        /// The endorser's public key: the catalog is authenticated first.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// Public base URL of the publication, for images without a URL.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// The endorser's certificate subject DN (hv:dn).
        #[arg(long, value_name = "DN")]
        dn: Option<String>,
        /// Its issuing CA's DN (hv:ca).
        #[arg(long, value_name = "DN")]
        ca: Option<String>,
        /// Sign the list as S/MIME with this certificate (needs openssl).
        #[arg(long, value_name = "PEM", requires = "smime_key")]
        smime_cert: Option<PathBuf>,
        /// The certificate's private key.
        #[arg(long, value_name = "PEM", requires = "smime_cert")]
        smime_key: Option<PathBuf>,
        #[command(flatten)]
        jobs: JobsArg,
    },
}

fn open(
    dir: &std::path::Path,
    pubkey: &std::path::Path,
) -> Result<(Publication, vmic_format::authenticate::Authenticated)> {
    let key = load_public_key(pubkey)?;
    let client = HttpClient::new(&HttpConfig::default())?;
    let spec = dir
        .to_str()
        .ok_or_else(|| Error::input(format!("{} is not valid UTF-8", dir.display())))?;
    let publication = Publication::open(spec, &client)?;
    let authenticated = publication.authenticate(&key, DEFAULT_MAX_CATALOG_BYTES)?;
    Ok((publication, authenticated))
}

pub fn run(cmd: Command, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    match cmd {
        Command::Simplestreams {
            dir,
            pubkey,
            content_id,
        } => {
            let (_, authenticated) = open(&dir, &pubkey)?;
            let content_id = content_id.unwrap_or_else(|| {
                format!("vmic.{}:images", authenticated.catalog.endorser().key_id)
            });
            let report = simplestreams(&dir, &authenticated, &content_id)?;
            out.say(format!(
                "{} image(s) exported as simplestreams: {}",
                report.images,
                report.written.join(", ")
            ));
            Ok(0)
        }
        Command::Hepix {
            out: list,
            publication,
            pubkey,
            base_url,
            dn,
            ca,
            smime_cert,
            smime_key,
            jobs,
        } => {
            let engine = Engine::new(jobs.jobs)?;
            let (source, authenticated) = open(&publication, &pubkey)?;
            let identity = X509Identity { dn, ca };
            let value = hepix(
                &source,
                &authenticated,
                (base_url.as_deref(), &identity),
                &engine,
            )?;
            let mut json = serde_json::to_vec_pretty(&value)
                .map_err(|e| Error::io_failure(format!("cannot serialise the list: {e}")))?;
            json.push(b'\n');
            match (smime_cert, smime_key) {
                (Some(cert), Some(key)) => smime_sign(&json, &cert, &key, &list)?,
                _ => vmic_engine::fsutil::atomic_write(&list, &json)?,
            }
            out.say(format!(
                "{} image(s) in the HEPiX list {}",
                authenticated.catalog.images().len(),
                list.display()
            ));
            Ok(0)
        }
    }
}
