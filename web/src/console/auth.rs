//! Console sessions, login, roles and CSRF.
//!
//! A session is a random 32-byte id in an `HttpOnly`, `SameSite=Strict` cookie, mapped in memory
//! to a role and a CSRF token (sessions end with the process, which only means logging in again).
//! Every POST must carry the session's token in a `csrf` form field, checked in constant time
//! before any handler runs; without one it gets 403. With no password configured, a GET hands
//! out an admin session on the spot, so the token check still protects every action.
//!
//! Only a login makes a session. The login form keeps no state on the server: its CSRF token is
//! a random value in a cookie of its own (`kiln_login`) that the form must echo (a double-submit
//! cookie), so anonymous visitors, however many, cannot push a logged-in session out of the
//! table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ConsoleState;
use super::error::ConsoleError;
use super::extract::{HtmlForm, HtmlQuery};
use super::layout;

/// The session cookie's name.
const COOKIE: &str = "kiln_session";
/// The login form's CSRF cookie: the form must carry the same value.
const LOGIN_COOKIE: &str = "kiln_login";
/// How long a login form may sit in the browser before it must be loaded again.
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// A session unused for this long is forgotten.
const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many sessions are kept, so clients that never send their cookie back cannot
/// grow the table without bound; past it, the least recently used go first.
const MAX_SESSIONS: usize = 10_000;
/// The largest form a POST may send (trigger params included).
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// What a logged-in viewer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything.
    Admin,
    /// Look, never touch.
    ReadOnly,
}

/// Who is looking at a page: handlers render forms with the CSRF token and hide actions the
/// role may not take.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) role: Role,
    pub(crate) csrf: String,
    /// Whether the console has passwords, so there is a logout button to show.
    pub(crate) logged_in: bool,
}

impl Viewer {
    /// Whether actions are shown.
    pub(crate) fn can_act(&self) -> bool {
        self.role == Role::Admin
    }
}

struct Session {
    role: Role,
    csrf: String,
    last_used: Instant,
    /// The table's use counter when this session was last used: orders sessions for eviction
    /// even where two uses fall on the same instant.
    last_use: u64,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<String, Session>,
    uses: u64,
}

/// The in-memory session table.
#[derive(Default)]
pub(crate) struct SessionStore {
    table: Mutex<Table>,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl SessionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a session; answers its id and CSRF token.
    fn create(&self, role: Role) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut table = self.lock();
        if table.sessions.len() >= MAX_SESSIONS {
            table
                .sessions
                .retain(|_, session| now.duration_since(session.last_used) < IDLE_TIMEOUT);
        }
        if table.sessions.len() >= MAX_SESSIONS {
            let oldest = table
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.last_use)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                table.sessions.remove(&oldest);
            }
        }
        table.uses += 1;
        let last_use = table.uses;
        table.sessions.insert(
            id.clone(),
            Session {
                role,
                csrf: csrf.clone(),
                last_used: now,
                last_use,
            },
        );
        (id, csrf)
    }

    /// The session's role and CSRF token, if it exists and has not expired; using it keeps it
    /// alive.
    fn touch(&self, id: &str) -> Option<(Role, String)> {
        let now = Instant::now();
        let mut table = self.lock();
        table.uses += 1;
        let last_use = table.uses;
        let session = table.sessions.get_mut(id)?;
        if now.duration_since(session.last_used) >= IDLE_TIMEOUT {
            table.sessions.remove(id);
            return None;
        }
        session.last_used = now;
        session.last_use = last_use;
        Some((session.role, session.csrf.clone()))
    }

    fn remove(&self, id: &str) {
        self.lock().sessions.remove(id);
    }
}

fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        })
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

fn cookie_header(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    // Names are constants and values hex, so the header is always valid.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn set_cookie(id: &str) -> HeaderValue {
    cookie_header(COOKIE, id, IDLE_TIMEOUT)
}

fn clear_cookie() -> HeaderValue {
    cookie_header(COOKIE, "", Duration::ZERO)
}

fn tokens_match(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Compares digests, so neither the length nor the content of a password leaks through timing.
fn password_matches(given: &str, expected: Option<&str>) -> bool {
    expected.is_some_and(|expected| {
        bool::from(
            Sha256::digest(given.as_bytes())[..].ct_eq(&Sha256::digest(expected.as_bytes())[..]),
        )
    })
}

/// A path on this server, safe to redirect to after a login or an action (never `//host`).
pub(crate) fn local_path(path: Option<&str>) -> Option<&str> {
    path.filter(|path| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path.starts_with("/\\")
            && !path.chars().any(|c| c.is_control() || c == '\\')
    })
}

/// Lets the request through only with a live session; a POST must also carry the session's CSRF
/// token. Puts the [`Viewer`] into the request for the handler.
pub(crate) async fn require_session(
    State(state): State<ConsoleState>,
    request: Request,
    next: Next,
) -> Response {
    let console = &state.config;
    let is_post = request.method() == Method::POST;
    let existing = session_id(request.headers()).and_then(|id| console.sessions.touch(&id));
    let mut new_session = None;
    let (role, csrf) = match existing {
        Some(found) => found,
        None if is_post => {
            return ConsoleError::Forbidden("no session; load the page again".to_owned())
                .into_response();
        }
        None if console.login_required() => return login_redirect(&request),
        None => {
            let (id, csrf) = console.sessions.create(Role::Admin);
            new_session = Some(id);
            (Role::Admin, csrf)
        }
    };
    let mut request = request;
    if is_post {
        request = match check_csrf(request, &csrf).await {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        };
    }
    request.extensions_mut().insert(Viewer {
        role,
        csrf,
        logged_in: console.login_required(),
    });
    let mut response = next.run(request).await;
    if let Some(id) = new_session {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&id));
    }
    response
}

/// Sends a viewer without a session to the login form; an htmx poll gets 401 with a header
/// telling htmx to go there, so a fragment never turns into a login page inside a page.
fn login_redirect(request: &Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let target = format!(
        "/login?next={}",
        form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
    );
    if request.headers().contains_key("hx-request") {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(value) = HeaderValue::from_str(&target) {
            response.headers_mut().insert("hx-redirect", value);
        }
        return response;
    }
    Redirect::to(&target).into_response()
}

/// Reads the form body, checks its `csrf` field, and rebuilds the request for the handler.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, ConsoleError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ConsoleError::BadRequest("the form is too large or unreadable".to_owned()))?;
    let token = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned());
    if !token.is_some_and(|token| tokens_match(&token, expected)) {
        return Err(ConsoleError::Forbidden(
            "the form's CSRF token is missing or stale; load the page again".to_owned(),
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Refuses actions to the read-only role. Runs after [`require_session`].
pub(crate) async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<Viewer>() {
        Some(viewer) if viewer.can_act() => next.run(request).await,
        _ => ConsoleError::Forbidden("this login is read-only".to_owned()).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

fn login_form(csrf: &str, next: Option<&str>, problem: Option<&str>) -> Markup {
    let body = html! {
        section.login {
            h1 { "Log in to kiln" }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(next) = next {
                    input type="hidden" name="next" value=(next);
                }
                label {
                    "Password "
                    input type="password" name="password" autocomplete="current-password" required autofocus;
                }
                button type="submit" { "Log in" }
            }
        }
    };
    layout::bare("Log in", body)
}

/// The login form. Its CSRF token lives in the `kiln_login` cookie, not on the server: a
/// forged login (from a page that cannot read or set this site's cookies) is refused like any
/// other forged POST, and a visitor who never logs in costs the server nothing.
pub(crate) async fn login_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    HtmlQuery(query): HtmlQuery<LoginQuery>,
) -> Response {
    let console = &state.config;
    let next = local_path(query.next.as_deref());
    if !console.login_required()
        || session_id(&headers).is_some_and(|id| console.sessions.touch(&id).is_some())
    {
        return Redirect::to(next.unwrap_or("/")).into_response();
    }
    // A form loaded again keeps its token, so two tabs of the login page both work.
    let csrf = cookie(&headers, LOGIN_COOKIE)
        .filter(|token| is_login_token(token))
        .unwrap_or_else(random_token);
    let mut response = login_form(&csrf, next, None).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, &csrf, LOGIN_FORM_LIFETIME),
    );
    response
}

/// Whether a cookie value has the shape `random_token` gives (and so is safe in a header).
fn is_login_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// Checks the password, unless the client or the login must wait after wrong ones (429 with
/// `Retry-After`, see `throttle`); the right one starts a fresh session holding the role (a new id, so a
/// session id planted before the login is worthless after it) and ends the login form's token.
pub(crate) async fn login(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    HtmlForm(form): HtmlForm<LoginForm>,
) -> Response {
    let console = &state.config;
    let next = local_path(form.next.as_deref()).unwrap_or("/");
    if !console.login_required() {
        return Redirect::to(next).into_response();
    }
    let Some(csrf) = cookie(&headers, LOGIN_COOKIE).filter(|token| is_login_token(token)) else {
        return ConsoleError::Forbidden("no login form; load the login page again".to_owned())
            .into_response();
    };
    if !tokens_match(&form.csrf, &csrf) {
        return ConsoleError::Forbidden(
            "the form's CSRF token is missing or stale; load the page again".to_owned(),
        )
        .into_response();
    }
    // The address `serve` saw; `None` when the app is called directly (then only the login's
    // own record throttles).
    let address = client.map(|Extension(ConnectInfo(address))| address.ip());
    let now = Instant::now();
    if let Some(wait) = console.throttle.wait(address, now) {
        // Whole seconds, rounded up, so a client that waits as told is never early.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::warn!(message = "Console login throttled.", address = ?address, retry_after_secs = seconds);
        let problem = format!("Too many wrong passwords; try again in {seconds} s.");
        let page = login_form(&csrf, Some(next), Some(&problem));
        let mut response = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let role = if password_matches(&form.password, console.admin_password.as_deref()) {
        Role::Admin
    } else if password_matches(&form.password, console.readonly_password.as_deref()) {
        Role::ReadOnly
    } else {
        console.throttle.failed(address, now);
        tracing::warn!(message = "Console login refused: wrong password.", address = ?address);
        let page = login_form(&csrf, Some(next), Some("Wrong password."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    };
    console.throttle.succeeded(address);
    if let Some(old_id) = session_id(&headers) {
        console.sessions.remove(&old_id);
    }
    let (id, _) = console.sessions.create(role);
    tracing::info!(message = "Console login.", role = ?role);
    let mut response = Redirect::to(next).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(&id));
    headers.append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, "", Duration::ZERO),
    );
    response
}

/// Ends the session.
pub(crate) async fn logout(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.config.sessions.remove(&id);
    }
    let target = if state.config.login_required() {
        "/login"
    } else {
        "/"
    };
    let mut response = Redirect::to(target).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(local_path(Some("/runs/1")), Some("/runs/1"));
        assert_eq!(local_path(Some("//evil.example")), None);
        assert_eq!(local_path(Some("/\\evil.example")), None);
        assert_eq!(local_path(Some("https://evil.example")), None);
        assert_eq!(local_path(Some("/a\nb")), None);
        assert_eq!(local_path(None), None);
    }

    #[test]
    fn passwords_compare_exactly() {
        assert!(password_matches("secret", Some("secret")));
        assert!(!password_matches("secret ", Some("secret")));
        assert!(!password_matches("", Some("secret")));
        assert!(!password_matches("secret", None));
    }

    #[test]
    fn the_session_table_stays_bounded() {
        let store = SessionStore::default();
        let (first, _) = store.create(Role::ReadOnly);
        for _ in 0..MAX_SESSIONS {
            store.create(Role::ReadOnly);
        }
        assert_eq!(store.lock().sessions.len(), MAX_SESSIONS);
        assert!(
            store.touch(&first).is_none(),
            "the oldest session went first"
        );
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; kiln_session=abc123; other=1"),
        );
        assert_eq!(session_id(&headers).as_deref(), Some("abc123"));
    }
}
