//! The viewer's page and static files: the HTML, script and style sheet are compiled into the
//! binary (`viewer/page/`); the NiiVue bundle is the file `scripts/setup.sh` copies out of the
//! pinned npm package into the assets folder ([`crate::service::config::ServiceConfig::viewer_assets_dir`]).
//! Everything the page loads comes from the service itself.

use crate::service::error::ApiError;
use std::path::Path;

/// The page of one job (the job id is read from its own address by the script).
pub const PAGE: &str = include_str!("../../../viewer/page/index.html");
const SCRIPT: &str = include_str!("../../../viewer/page/viewer.js");
const STYLE: &str = include_str!("../../../viewer/page/viewer.css");

/// The NiiVue bundle's file name in the assets folder.
pub const NIIVUE: &str = "niivue.js";

/// The page's Content-Security-Policy: only this origin's scripts, styles, images and
/// fetches; no framing by other sites; blob: and data: images are NiiVue's own canvases.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                       connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'self'";

/// A static file by name: (bytes, content type); 404 for any other name, 503 when the NiiVue
/// bundle was never installed.
pub fn asset(name: &str, dir: &Path) -> Result<(Vec<u8>, &'static str), ApiError> {
    match name {
        "viewer.js" => Ok((SCRIPT.as_bytes().to_vec(), "text/javascript; charset=utf-8")),
        "viewer.css" => Ok((STYLE.as_bytes().to_vec(), "text/css; charset=utf-8")),
        NIIVUE => std::fs::read(dir.join(NIIVUE))
            .map(|bytes| (bytes, "text/javascript; charset=utf-8"))
            .map_err(|_| {
                ApiError::Unavailable(
                    "the viewer's NiiVue bundle is not installed: run scripts/setup.sh or set viewer_assets"
                        .into(),
                )
            }),
        _ => Err(ApiError::NotFound(format!("the viewer has no file named {name}"))),
    }
}
