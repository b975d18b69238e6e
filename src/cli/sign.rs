//! `vmic sign`: sign any file like `minisign -S` (prehashed), e.g. a catalog
//! edited by hand or produced by another tool.

use std::path::PathBuf;

use vmic_engine::fsutil::atomic_write;
use vmic_format::error::{Error, Result};

use super::Output;
use super::password::{PasswordArgs, load_secret_key};

/// Sign FILE with a secret key, writing FILE.minisig.
#[derive(clap::Args)]
pub struct Args {
    /// File to sign.
    file: PathBuf,
    /// Secret key (minisign format).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Trusted comment (signed); default: timestamp and file name.
    #[arg(long, value_name = "TEXT")]
    trusted_comment: Option<String>,
    #[command(flatten)]
    password: PasswordArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    let bytes = std::fs::read(&args.file).map_err(|e| Error::io("read", &args.file, e))?;
    let key = load_secret_key(&args.key, &args.password)?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trusted = args.trusted_comment.unwrap_or_else(|| {
        format!(
            "timestamp:{}\tfile:{name}",
            jiff::Timestamp::now().as_second()
        )
    });
    let sig = key.sign(&bytes, &trusted, "signature from vmic secret key");
    let mut sig_path = args.file.as_os_str().to_owned();
    sig_path.push(vmic_format::publication::SIGNATURE_SUFFIX);
    let sig_path = PathBuf::from(sig_path);
    atomic_write(&sig_path, sig.to_file_string().as_bytes())?;
    out.say(format!(
        "signed {} with key {} -> {}",
        args.file.display(),
        key.key_id,
        sig_path.display()
    ));
    Ok(0)
}
