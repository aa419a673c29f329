//! Who may read what. Without `--admin-token` everything is open. With it,
//! the dashboard, the listings (`/counts`, `/live/*`, `ListTopics`), the
//! cluster (`/cluster`, `ListMembers`), `/metrics` and server reflection need
//! `Authorization: Bearer TOKEN`; a listing whose prefix lies under one of
//! `--public-prefixes` stays open, so a site can share its own numbers.
//! A page's own count (`/ws`, `/count`, `GetCount`, `WatchCount`), `/hc.js`
//! and the health checks are always open.
//!
//! The token is compared in constant time and never printed.

use axum::http::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

/// The operator's token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// Why a string cannot be an admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 16 to 256 visible ASCII characters (e.g. `openssl rand -hex 32`)")]
pub struct InvalidAdminToken;

impl AdminToken {
    /// Checks `token`: long enough to resist guessing, and sendable in a header.
    pub fn new(token: &str) -> Result<Self, InvalidAdminToken> {
        let visible = token.bytes().all(|byte| byte.is_ascii_graphic());
        if !(16..=256).contains(&token.len()) || !visible {
            return Err(InvalidAdminToken);
        }
        Ok(Self(token.to_owned()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// A request lacked the token (or had a wrong one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this needs Authorization: Bearer <admin token>")]
pub struct Unauthorized;

/// The access rules of one node.
#[derive(Debug, Clone, Default)]
pub struct Access {
    token: Option<AdminToken>,
    public_prefixes: Vec<String>,
}

impl Access {
    /// Rules for `token` (none: all open) and the listings left open.
    pub fn new(token: Option<AdminToken>, public_prefixes: Vec<String>) -> Self {
        Self { token, public_prefixes }
    }

    /// An admin-only request: the token must be presented.
    pub fn admin(&self, authorization: Option<&str>) -> Result<(), Unauthorized> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(token.0.as_bytes())) {
            Ok(())
        } else {
            Err(Unauthorized)
        }
    }

    /// A listing of topics under `prefix`: open under a public prefix.
    pub fn listing(&self, authorization: Option<&str>, prefix: &str) -> Result<(), Unauthorized> {
        if self
            .public_prefixes
            .iter()
            .any(|public| prefix.starts_with(public.as_str()))
        {
            return Ok(());
        }
        self.admin(authorization)
    }
}

/// The `Authorization` header of an HTTP request, if readable.
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let token = AdminToken::new("0123456789abcdef").expect("valid");
        Access::new(Some(token), vec!["example.com/".into()])
    }

    #[test]
    fn without_a_token_everything_is_open() {
        let open = Access::default();
        assert_eq!(open.admin(None), Ok(()));
        assert_eq!(open.listing(None, ""), Ok(()));
    }

    #[test]
    fn admin_requests_need_the_exact_bearer_token() {
        let access = access();
        assert_eq!(access.admin(Some("Bearer 0123456789abcdef")), Ok(()));
        for wrong in [
            None,
            Some("0123456789abcdef"),
            Some("Bearer 0123456789abcdeX"),
            Some("Bearer "),
        ] {
            assert_eq!(access.admin(wrong), Err(Unauthorized), "{wrong:?}");
        }
    }

    #[test]
    fn listings_under_a_public_prefix_stay_open() {
        let access = access();
        assert_eq!(access.listing(None, "example.com/"), Ok(()));
        assert_eq!(access.listing(None, "example.com/blog/"), Ok(()));
        assert_eq!(access.listing(None, "example.org/"), Err(Unauthorized));
        assert_eq!(access.listing(None, ""), Err(Unauthorized), "everything is not public");
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        assert_eq!(AdminToken::new("short"), Err(InvalidAdminToken));
        assert_eq!(AdminToken::new("has a space in it!"), Err(InvalidAdminToken));
        let token = AdminToken::new("a-secret-admin-token").expect("valid");
        assert!(!format!("{token:?}").contains("secret"));
    }
}
