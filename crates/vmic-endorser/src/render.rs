//! The human-readable `index.html` of a published catalog, rendered with
//! minijinja from `templates/`, plus the static assets from `site/`.
//!
//! Both are compiled into the binary so that `vmic` stays a single file.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use minijinja::{Environment, context};

const INDEX_TEMPLATE: &str = include_str!("../../../templates/index.html");

/// Static files copied into every published directory.
pub const SITE_ASSETS: &[(&str, &[u8])] =
    &[("style.css", include_bytes!("../../../site/style.css"))];

/// Render `index.html` for `catalog`. HTML autoescaping is on (the template
/// name ends in `.html`), so catalog text can never inject markup.
pub fn render_index(catalog: &Catalog, pubkey_text: &str) -> Result<String> {
    let mut env = Environment::new();
    env.add_template("index.html", INDEX_TEMPLATE)
        .map_err(|e| Error::io_failure(format!("built-in template is broken: {e}")))?;
    let mut view = serde_json::to_value(catalog)
        .map_err(|e| Error::io_failure(format!("cannot serialise the catalog: {e}")))?;
    if let Some(images) = view.get_mut("images").and_then(|v| v.as_array_mut()) {
        for (value, image) in images.iter_mut().zip(catalog.images()) {
            value["size_human"] = human_size(image.size()).into();
            let path = image.path.as_str();
            value["file_name"] = path.rsplit('/').next().unwrap_or(path).into();
        }
    }
    let template = env
        .get_template("index.html")
        .map_err(|e| Error::io_failure(format!("built-in template is missing: {e}")))?;
    template
        .render(context! {
            catalog => view,
            pubkey_text => pubkey_text,
            generator => concat!("vmic ", env!("CARGO_PKG_VERSION")),
        })
        .map_err(|e| Error::io_failure(format!("cannot render index.html: {e}")))
}

/// Binary units, one decimal: `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
