//! The files pages load from a node, compiled into the binary: the embed
//! script `/hc.js` and the dashboard at `/`. Nothing is fetched from
//! anywhere else, so the dashboard runs under a strict Content-Security-Policy.
//!
//! Every asset is gzipped once, at first use, and carries an `ETag` (a hash
//! of its bytes), so browsers revalidate with a 304 instead of downloading it
//! again. The sources are in `crates/server/assets/`, served as written.

use std::sync::{Arc, LazyLock};

use axum::{
    extract::State,
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{
            ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
            IF_NONE_MATCH, VARY, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
        },
    },
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::{access::authorization, state::AppState};

/// What the dashboard may load and connect to: its own origin only.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file served to browsers.
pub(crate) struct Asset {
    content_type: &'static str,
    cache_control: &'static str,
    raw: &'static [u8],
    gzipped: Vec<u8>,
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, cache_control: &'static str, raw: &'static [u8]) -> Self {
        let hash = format!("{:x}", Sha256::digest(raw));
        let etag = HeaderValue::from_str(&format!("\"{}\"", &hash[..16])).unwrap_or(HeaderValue::from_static("\"0\""));
        Self {
            content_type,
            cache_control,
            raw,
            gzipped: gzip(raw),
            etag,
        }
    }

    /// The file, gzipped when the client accepts it; 304 when the client's
    /// copy is current.
    fn respond(&self, request: &HeaderMap) -> Response {
        let current = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| tag.trim() == "*" || tag.trim() == self.etag.to_str().unwrap_or_default());
        let mut response = if current {
            StatusCode::NOT_MODIFIED.into_response()
        } else if accepts_gzip(request) {
            ([(CONTENT_ENCODING, "gzip")], self.gzipped.clone()).into_response()
        } else {
            self.raw.into_response()
        };
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache_control));
        headers.insert(ETAG, self.etag.clone());
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(raw);
    encoder.finish().unwrap_or_default()
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The embed script, cached an hour by browsers and shared caches.
pub(crate) static EMBED_SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        "public, max-age=3600",
        include_bytes!("../assets/hc.js"),
    )
});
static DASHBOARD_HTML: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/html; charset=utf-8",
        "no-cache",
        include_bytes!("../assets/dashboard.html"),
    )
});
static DASHBOARD_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/css; charset=utf-8",
        "no-cache",
        include_bytes!("../assets/dashboard.css"),
    )
});
static DASHBOARD_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        "no-cache",
        include_bytes!("../assets/dashboard.js"),
    )
});

/// `GET /hc.js`.
pub(crate) async fn embed_script(headers: HeaderMap) -> Response {
    EMBED_SCRIPT.respond(&headers)
}

/// `GET /`: the dashboard page, under its Content-Security-Policy. The page
/// holds no data: without the admin token (when one is set) it is answered
/// with 401, and its script asks for the token and sends it with every
/// request for data.
pub(crate) async fn dashboard(State(app): State<Arc<AppState>>, mut headers: HeaderMap) -> Response {
    let authorized = app.access.admin(authorization(&headers)).is_ok();
    if !authorized {
        // A 401 must carry the page itself, never an empty 304.
        headers.remove(IF_NONE_MATCH);
    }
    let mut response = DASHBOARD_HTML.respond(&headers);
    if !authorized {
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    response
}

/// `GET /dashboard.css`.
pub(crate) async fn dashboard_css(headers: HeaderMap) -> Response {
    DASHBOARD_CSS.respond(&headers)
}

/// `GET /dashboard.js`.
pub(crate) async fn dashboard_js(headers: HeaderMap) -> Response {
    DASHBOARD_JS.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).expect("header")))
            .collect()
    }

    #[test]
    fn the_embed_script_is_at_most_one_kib_gzipped() {
        let size = EMBED_SCRIPT.gzipped.len();
        assert!(size <= 1024, "hc.js is {size} bytes gzipped");
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        let gzipped = EMBED_SCRIPT.respond(&headers(&[(ACCEPT_ENCODING, "br, gzip;q=0.8")]));
        assert_eq!(
            gzipped.headers().get(CONTENT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"gzip"[..])
        );
        for refusing in ["identity", "gzip;q=0", ""] {
            let plain = EMBED_SCRIPT.respond(&headers(&[(ACCEPT_ENCODING, refusing)]));
            assert!(plain.headers().get(CONTENT_ENCODING).is_none(), "{refusing:?}");
        }
    }

    #[test]
    fn a_current_copy_is_answered_with_304() {
        let first = EMBED_SCRIPT.respond(&HeaderMap::new());
        let etag = first
            .headers()
            .get(ETAG)
            .expect("etag")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(first.status(), StatusCode::OK);
        let again = EMBED_SCRIPT.respond(&headers(&[(IF_NONE_MATCH, &etag)]));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let stale = EMBED_SCRIPT.respond(&headers(&[(IF_NONE_MATCH, "\"old\"")]));
        assert_eq!(stale.status(), StatusCode::OK);
    }
}
