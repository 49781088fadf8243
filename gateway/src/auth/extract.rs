//! Extractors that put the permission a handler needs into its signature:
//! `Authorized<Produce>` on a produce handler cannot be called without a principal allowed to
//! produce on the `{station}` of its path. Authentication runs before the body is read, so an
//! anonymous client gets 401 before any 400 about its body; the per-credential rate limit is
//! taken right after authentication.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::Principal;
use crate::error::ApiError;
use crate::meta::Action;
use crate::rate_limit::RateKey;
use crate::state::AppState;

/// A permission a handler requires.
pub trait Need: 'static {
    fn check(principal: &Principal, req: &HttpRequest) -> Result<(), ApiError>;
}

fn station_action(action: Action, principal: &Principal, req: &HttpRequest) -> Result<(), ApiError> {
    let station = req.match_info().get("station").unwrap_or_default();
    if principal.allows(action, station) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("not allowed to {} on station {station:?}", action.as_str())))
    }
}

/// `produce` on the path's station.
#[derive(Debug)]
pub struct Produce;
/// `consume` on the path's station: fetch and settle, read groups.
#[derive(Debug)]
pub struct Consume;
/// `manage` on the path's station: configure stations and groups, dead letters.
#[derive(Debug)]
pub struct Manage;
/// Any action on the path's station (reading it).
#[derive(Debug)]
pub struct SeeStation;
/// An administrator acting in person (not through a scoped key).
#[derive(Debug)]
pub struct AdminInPerson;
/// A Depot user in person: API keys cannot mint keys, and external identities own none.
#[derive(Debug)]
pub struct Person;
/// Reading `/metrics`: see [`Principal::may_scrape_metrics`].
#[derive(Debug)]
pub struct ScrapeMetrics;
/// Any authenticated principal.
#[derive(Debug)]
pub struct Anyone;

impl Need for Produce {
    fn check(p: &Principal, req: &HttpRequest) -> Result<(), ApiError> {
        station_action(Action::Produce, p, req)
    }
}

impl Need for Consume {
    fn check(p: &Principal, req: &HttpRequest) -> Result<(), ApiError> {
        station_action(Action::Consume, p, req)
    }
}

impl Need for Manage {
    fn check(p: &Principal, req: &HttpRequest) -> Result<(), ApiError> {
        station_action(Action::Manage, p, req)
    }
}

impl Need for SeeStation {
    fn check(p: &Principal, req: &HttpRequest) -> Result<(), ApiError> {
        let station = req.match_info().get("station").unwrap_or_default();
        if p.sees(station) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("no access to station {station:?}")))
        }
    }
}

impl Need for AdminInPerson {
    fn check(p: &Principal, _: &HttpRequest) -> Result<(), ApiError> {
        if p.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only an administrator may do this".to_owned()))
        }
    }
}

impl Need for Person {
    fn check(p: &Principal, _: &HttpRequest) -> Result<(), ApiError> {
        if p.kind == super::PrincipalKind::User {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only a Depot user manages API keys; log in with a username and password".to_owned(),
            ))
        }
    }
}

impl Need for ScrapeMetrics {
    fn check(p: &Principal, _: &HttpRequest) -> Result<(), ApiError> {
        if p.may_scrape_metrics() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "reading metrics needs an administrator, or an administrator's API key with the metrics action"
                    .to_owned(),
            ))
        }
    }
}

impl Need for Anyone {
    fn check(_: &Principal, _: &HttpRequest) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The authenticated principal, checked against `N`.
#[derive(Debug)]
pub struct Authorized<N: Need> {
    pub principal: Principal,
    need: PhantomData<N>,
}

/// The bearer token of a request, if it has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

async fn principal(req: &HttpRequest) -> Result<Principal, ApiError> {
    if let Some(p) = req.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    let state =
        req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::Internal("the app has no state".to_owned()))?;
    let token = bearer(req).ok_or_else(|| ApiError::Unauthorized("missing bearer token".to_owned()))?;
    let principal = state.auth.authenticate(token).await?;
    state.credential_limiter.check(&RateKey::Credential(principal.actor())).map_err(ApiError::RateLimited)?;
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
}

impl<N: Need> FromRequest for Authorized<N> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = principal(&req).await?;
            N::check(&principal, &req)?;
            Ok(Authorized { principal, need: PhantomData })
        })
    }
}
