//! Logging in with an API token, logging out, and choosing the language.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::i18n::Lang;
use super::render::page;
use super::session::{
    LANG_COOKIE, LOGIN_COOKIE, SESSION_COOKIE, Session, cookie, lang_of, local_path, set_cookie,
};
use crate::auth::authenticate;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

/// The login form, with a fresh CSRF token in a cookie and in the form.
pub async fn form(headers: HeaderMap, Query(query): Query<LoginQuery>) -> Response {
    let notice = query.expired.is_some().then_some("login-expired");
    login_page(
        &headers,
        StatusCode::OK,
        query.next.as_deref(),
        notice,
        None,
    )
}

fn login_page(
    headers: &HeaderMap,
    status: StatusCode,
    next: Option<&str>,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let lang = lang_of(headers);
    let mut response = page(
        status,
        "login",
        lang,
        None,
        "/login",
        json!({
            "title": super::i18n::t(lang, "login-title", None),
            "page": "login",
            "session": null,
            "login_csrf": csrf,
            "next": local_path(next),
            "notice": notice,
            "error": error,
        }),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &csrf, None),
    );
    response
}

/// Checks the token like any API call; on success the session cookie holds it.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE);
    if expected.is_none_or(|expected| expected != form.csrf) {
        return login_page(
            &headers,
            StatusCode::FORBIDDEN,
            form.next.as_deref(),
            None,
            Some("login-csrf"),
        );
    }
    let token = form.token.trim();
    match authenticate(&state.db, token).await {
        Ok(Some(_)) => {
            let mut response = Redirect::to(&local_path(form.next.as_deref())).into_response();
            let cookies = response.headers_mut();
            cookies.append(
                header::SET_COOKIE,
                set_cookie(&headers, SESSION_COOKIE, token, None),
            );
            cookies.append(
                header::SET_COOKIE,
                set_cookie(&headers, LOGIN_COOKIE, "", Some(0)),
            );
            response
        }
        Ok(None) => login_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            form.next.as_deref(),
            None,
            Some("login-refused"),
        ),
        Err(failure) => failure.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// Ends the session (the token itself stays valid: revoke it in Tokens to end its use).
pub async fn logout(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !session.csrf_ok(&headers, form.csrf.as_deref()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", Some(0)),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct LanguageQuery {
    lang: String,
    back: Option<String>,
}

/// The language picker: remembers the choice for a year and goes back to the page.
pub async fn choose_language(headers: HeaderMap, Query(query): Query<LanguageQuery>) -> Response {
    let lang = Lang::parse(&query.lang).unwrap_or_else(|| lang_of(&headers));
    let mut response = Redirect::to(&local_path(query.back.as_deref())).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, LANG_COOKIE, lang.tag(), Some(365 * 86_400)),
    );
    response
}
