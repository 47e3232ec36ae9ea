//! The seed's authentication sections: `tokens` (top level and under `foundry`),
//! `foundry.users[]` and `foundry.oauth_clients[]`, in the reference emulator's key names so
//! its seed files carry over.

use serde_json::{Map, Value};

use super::{object, optional_string, required_string, string_list, FieldResult};
use crate::auth::users::{PrincipalType, User};
use crate::auth::{OauthClient, Secret, StaticToken};

const TOKEN_KEYS: &[&str] = &["token", "login", "scopes"];
const TOKEN_OPTION_KEYS: &[&str] = &["login", "scopes"];
const USER_KEYS: &[&str] = &[
    "username",
    "display_name",
    "email",
    "given_name",
    "family_name",
    "principal_type",
];
const CLIENT_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "name",
    "redirect_uris",
    "grant_types",
    "allowed_scopes",
];
const GRANTS: &[&str] = &["client_credentials", "authorization_code", "refresh_token"];

/// `tokens` in any of three forms: `["t1", ...]`, `[{"token", "login", "scopes"}, ...]`, or
/// `{"t1": {"login", "scopes"}, "t2": null, ...}`.
pub(super) fn tokens(section: &Map<String, Value>, at: &str) -> FieldResult<Vec<StaticToken>> {
    let field = "tokens";
    let path = if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    };
    let plain = |token: String| StaticToken::plain(&token);
    match section.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .enumerate()
            .map(|(i, (token, options))| {
                // The entry is named by position: a token never appears in a message.
                let entry = format!("{path} (entry {})", i + 1);
                if token.trim().is_empty() {
                    return Err((entry, String::new(), "a token must not be blank".into()));
                }
                let mut t = plain(token.clone());
                if !options.is_null() {
                    let obj = object(options, &entry, TOKEN_OPTION_KEYS)?;
                    t.login = optional_string(obj, &entry, "login")?;
                    t.scopes = string_list(obj, &entry, "scopes")?;
                }
                Ok(t)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.trim().is_empty() => Ok(plain(s.clone())),
                Value::Object(_) => {
                    let entry = format!("{path}[{i}]");
                    let obj = object(item, &entry, TOKEN_KEYS)?;
                    let mut t = plain(required_string(obj, &entry, "token")?);
                    t.login = optional_string(obj, &entry, "login")?;
                    t.scopes = string_list(obj, &entry, "scopes")?;
                    Ok(t)
                }
                _ => Err((
                    at.to_string(),
                    field.to_string(),
                    "must list non-blank strings or {\"token\", \"login\", \"scopes\"} objects"
                        .into(),
                )),
            })
            .collect(),
        Some(_) => Err((
            at.to_string(),
            field.to_string(),
            "must be a list or an object of tokens".into(),
        )),
    }
}

/// `foundry.users[]`.
pub(super) fn users(foundry: &Map<String, Value>) -> FieldResult<Vec<User>> {
    let mut users: Vec<User> = Vec::new();
    for (i, entry) in list(foundry, "users")?.iter().enumerate() {
        let at = format!("foundry.users[{i}]");
        let obj = object(entry, &at, USER_KEYS)?;
        let username = required_string(obj, &at, "username")?;
        if users.iter().any(|u| u.username == username) {
            return Err((
                at,
                "username".into(),
                format!("'{username}' is declared twice"),
            ));
        }
        let principal_type = match optional_string(obj, &at, "principal_type")?.as_deref() {
            None => PrincipalType::User,
            Some(t) if t.eq_ignore_ascii_case("user") => PrincipalType::User,
            Some(t) if t.eq_ignore_ascii_case("service") => PrincipalType::Service,
            Some(_) => {
                return Err((
                    at,
                    "principal_type".into(),
                    "must be USER or SERVICE".into(),
                ))
            }
        };
        users.push(User {
            username,
            display_name: optional_string(obj, &at, "display_name")?,
            email: optional_string(obj, &at, "email")?,
            given_name: optional_string(obj, &at, "given_name")?,
            family_name: optional_string(obj, &at, "family_name")?,
            principal_type,
        });
    }
    Ok(users)
}

/// `foundry.oauth_clients[]`.
pub(super) fn clients(foundry: &Map<String, Value>) -> FieldResult<Vec<OauthClient>> {
    let mut clients: Vec<OauthClient> = Vec::new();
    for (i, entry) in list(foundry, "oauth_clients")?.iter().enumerate() {
        let at = format!("foundry.oauth_clients[{i}]");
        let obj = object(entry, &at, CLIENT_KEYS)?;
        let client_id = required_string(obj, &at, "client_id")?;
        if clients.iter().any(|c| c.client_id == client_id) {
            return Err((
                at,
                "client_id".into(),
                format!("'{client_id}' is declared twice"),
            ));
        }
        let grant_types = string_list(obj, &at, "grant_types")?;
        if let Some(bad) = grant_types.iter().find(|g| !GRANTS.contains(&g.as_str())) {
            return Err((
                at,
                "grant_types".into(),
                format!("'{bad}' is not a grant (known: {})", GRANTS.join(", ")),
            ));
        }
        clients.push(OauthClient {
            client_id,
            client_secret: optional_string(obj, &at, "client_secret")?.map(Secret::new),
            name: optional_string(obj, &at, "name")?,
            redirect_uris: string_list(obj, &at, "redirect_uris")?,
            grant_types,
            allowed_scopes: string_list(obj, &at, "allowed_scopes")?,
        });
    }
    Ok(clients)
}

fn list<'a>(section: &'a Map<String, Value>, key: &str) -> FieldResult<&'a [Value]> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(("foundry".into(), key.into(), "must be a list".into())),
    }
}
