//! Where secret-key passwords come from: `--password-file`, `VMIC_PASSWORD`,
//! or a terminal prompt — never a command-line argument.

use std::path::{Path, PathBuf};

use vmic_format::error::{Error, Result};

pub const PASSWORD_ENV: &str = "VMIC_PASSWORD";

#[derive(clap::Args, Clone)]
pub struct PasswordArgs {
    /// Read the key password from the first line of this file (for automation).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl PasswordArgs {
    /// Obtain the password; `confirm` asks twice on a terminal (keygen).
    pub fn obtain(&self, purpose: &str, confirm: bool) -> Result<Vec<u8>> {
        if let Some(path) = &self.password_file {
            return from_file(path);
        }
        if let Ok(value) = std::env::var(PASSWORD_ENV) {
            return non_empty(value.into_bytes(), PASSWORD_ENV);
        }
        let first = prompt(&format!("Password for {purpose}: "))?;
        let first = non_empty(first.into_bytes(), "the prompt")?;
        if confirm {
            let again = prompt("Password (again): ")?;
            if again.as_bytes() != first.as_slice() {
                return Err(Error::input(
                    "the two passwords differ; nothing was written",
                ));
            }
        }
        Ok(first)
    }
}

fn from_file(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path).map_err(|e| Error::io("read password file", path, e))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    non_empty(line.to_vec(), &path.display().to_string())
}

fn non_empty(password: Vec<u8>, from: &str) -> Result<Vec<u8>> {
    if password.is_empty() {
        return Err(Error::input(format!(
            "empty password from {from}; use a real password, or -W/--unencrypted for an unencrypted key"
        )));
    }
    Ok(password)
}

fn prompt(text: &str) -> Result<String> {
    rpassword::prompt_password(text).map_err(|e| {
        Error::input(format!(
            "a password is needed but none could be read from a terminal ({e}); set {PASSWORD_ENV} or use --password-file"
        ))
    })
}

/// Read and unlock a secret key file, asking for a password only if needed.
pub fn load_secret_key(
    path: &Path,
    password: &PasswordArgs,
) -> Result<vmic_format::minisign::SecretKey> {
    use vmic_format::minisign::SecretKey;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read secret key", path, e))?;
    let context = |e: Error| e.context(format!("secret key {}", path.display()));
    let encrypted = SecretKey::is_encrypted(&text).map_err(context)?;
    let pass = if encrypted {
        Some(password.obtain(&format!("secret key {}", path.display()), false)?)
    } else {
        None
    };
    SecretKey::parse(&text, pass.as_deref()).map_err(context)
}

/// Read a minisign public key file.
pub fn load_public_key(path: &Path) -> Result<vmic_format::minisign::PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read public key", path, e))?;
    vmic_format::minisign::PublicKey::parse(&text)
        .map_err(|e| e.context(format!("public key {}", path.display())))
}
