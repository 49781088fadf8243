//! Who made a request, and what that allows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::scope;
use crate::meta::{Action, Role, Scope, User};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// A username, an API key id, or an external token's subject.
    pub subject: String,
    pub kind: PrincipalKind,
    pub role: Role,
    /// `None`: everything the role allows on stations. `Some`: only what the scopes grant.
    pub scopes: Option<Arc<[Scope]>>,
    /// The user behind it: the user themselves, or the owner of the API key (an external
    /// subject for external tokens).
    pub owner: String,
    /// The immutable [`User::id`] of `owner`; `None` for external tokens, which name no Depot user.
    pub owner_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ApiKey,
    External,
}

impl Principal {
    /// A user acting in person, with everything their role allows.
    pub fn user(user: &User) -> Principal {
        Principal {
            owner: user.username.clone(),
            subject: user.username.clone(),
            owner_id: Some(user.id.clone()),
            kind: PrincipalKind::User,
            role: user.role,
            scopes: None,
        }
    }

    /// Whether the principal may do `action` on `station`. Admins and members alike may act on
    /// every station unless scopes narrow them; what only admins may do (users, every key, the
    /// audit log) is checked by [`Principal::is_admin`].
    pub fn allows(&self, action: Action, station: &str) -> bool {
        match &self.scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|s| s.actions.contains(&action) && scope::matches(&s.stations, station)),
        }
    }

    /// Whether any action at all is allowed on `station` (to see it in lists).
    pub fn sees(&self, station: &str) -> bool {
        [Action::Produce, Action::Consume, Action::Manage].into_iter().any(|a| self.allows(a, station))
    }

    /// An administrator acting as a person, not through a scoped key.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.scopes.is_none()
    }

    /// Whether the principal may read `/metrics`, which names every station and group: an
    /// administrator in person, an API key of an administrator whose scopes grant `metrics`, or
    /// an external token whose scopes grant it (its issuer decides).
    pub fn may_scrape_metrics(&self) -> bool {
        let granted = || self.scopes.as_ref().is_some_and(|s| s.iter().any(|s| s.actions.contains(&Action::Metrics)));
        self.is_admin()
            || match self.kind {
                PrincipalKind::External => granted(),
                PrincipalKind::User | PrincipalKind::ApiKey => self.role == Role::Admin && granted(),
            }
    }

    /// What the audit log records as the actor.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::User => self.subject.clone(),
            PrincipalKind::ApiKey => format!("api_key:{}", self.subject),
            PrincipalKind::External => format!("external:{}", self.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_a_principal() {
        let p = Principal {
            subject: "k".into(),
            kind: PrincipalKind::ApiKey,
            role: Role::Admin,
            scopes: Some(vec![Scope { stations: "orders*".into(), actions: vec![Action::Produce] }].into()),
            owner: "admin".into(),
            owner_id: Some("usr_x".into()),
        };
        assert!(p.allows(Action::Produce, "orders-eu"));
        assert!(!p.allows(Action::Consume, "orders-eu"));
        assert!(!p.allows(Action::Produce, "billing"));
        assert!(p.sees("orders"));
        assert!(!p.sees("billing"));
        assert!(!p.is_admin(), "a scoped key of an admin is not an admin");
    }

    #[test]
    fn who_may_scrape_metrics() {
        let metrics = || Some(vec![Scope { stations: "*".into(), actions: vec![Action::Metrics] }].into());
        let everything = || {
            Some(
                vec![Scope { stations: "*".into(), actions: vec![Action::Produce, Action::Consume, Action::Manage] }]
                    .into(),
            )
        };
        let p = |kind, role, scopes| Principal {
            subject: "s".into(),
            kind,
            role,
            scopes,
            owner: "o".into(),
            owner_id: None,
        };
        assert!(p(PrincipalKind::User, Role::Admin, None).may_scrape_metrics());
        assert!(!p(PrincipalKind::User, Role::Member, None).may_scrape_metrics());
        assert!(p(PrincipalKind::ApiKey, Role::Admin, metrics()).may_scrape_metrics());
        assert!(!p(PrincipalKind::ApiKey, Role::Admin, everything()).may_scrape_metrics());
        assert!(!p(PrincipalKind::ApiKey, Role::Member, metrics()).may_scrape_metrics(), "never beyond the owner");
        assert!(p(PrincipalKind::External, Role::Member, metrics()).may_scrape_metrics());
        assert!(!p(PrincipalKind::External, Role::Admin, everything()).may_scrape_metrics());
        let scraper = p(PrincipalKind::ApiKey, Role::Admin, metrics());
        assert!(!scraper.sees("orders"), "metrics grants nothing on stations");
    }
}
