//! `vmic keygen`: a new minisign key pair.

use std::path::PathBuf;

use vmic_engine::fsutil::{atomic_write, refuse_existing, write_secret};
use vmic_format::error::Result;
use vmic_format::minisign::SecretKey;

use super::Output;
use super::password::PasswordArgs;

/// Create a minisign key pair: FILE (secret, mode 0600) and FILE.pub.
#[derive(clap::Args)]
pub struct Args {
    /// Secret key file to create; the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Store the secret key unencrypted (like `minisign -G -W`).
    #[arg(short = 'W', long)]
    unencrypted: bool,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
    /// Untrusted comment written into the secret key file.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "minisign encrypted secret key"
    )]
    comment: String,
    #[command(flatten)]
    password: PasswordArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let pub_path = pub_path(&args.out);
    refuse_existing(&args.out, args.force)?;
    refuse_existing(&pub_path, args.force)?;
    let password = if args.unencrypted {
        None
    } else {
        Some(args.password.obtain("the new secret key", true)?)
    };
    let key = SecretKey::generate()?;
    let secret_text = key.to_file_string(password.as_deref(), &args.comment)?;
    write_secret(&args.out, secret_text.as_bytes(), args.force)?;
    atomic_write(&pub_path, key.public_key().to_file_string().as_bytes())?;
    if args.json {
        super::print_json(&serde_json::json!({
            "key_id": key.key_id.to_string(),
            "secret_key": args.out,
            "public_key": pub_path,
            "encrypted": password.is_some(),
        }));
    } else {
        out.say(format!("key id: {}", key.key_id));
        out.say(format!(
            "secret key: {} (mode 0600, {})",
            args.out.display(),
            if password.is_some() {
                "scrypt-encrypted"
            } else {
                "UNENCRYPTED"
            }
        ));
        out.say(format!("public key: {}", pub_path.display()));
    }
    Ok(0)
}

pub fn pub_path(secret: &std::path::Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}
