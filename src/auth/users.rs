//! The user directory: seeded users, the service user of each OAuth2 client, and the default
//! user that permissive mode answers for any other token.
//!
//! A user's `id` is a UUID derived from its username (RFC 9562 version 8, SHA-256 based), so
//! it is the same on every run and every machine: a test may hard-code it.

use serde_json::{json, Value};

use super::sha256;

/// The user a token acts for when nothing more specific is known (permissive mode, static
/// tokens without a `login`).
pub const DEFAULT_USERNAME: &str = "foundry-emulator-user";

/// The realm Foundry reports for users of its own directory.
const REALM: &str = "palantir-internal-realm";

/// Whether a principal is a person or a service (a client-credentials token's user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalType {
    User,
    Service,
}

/// One user, as seeded (`foundry.users[]`) or made up for a client or a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub principal_type: PrincipalType,
}

impl User {
    /// A person with only a username.
    pub fn named(username: &str) -> User {
        User {
            username: username.to_string(),
            display_name: None,
            email: None,
            given_name: None,
            family_name: None,
            principal_type: PrincipalType::User,
        }
    }

    /// The service user of an OAuth2 client: named after the client id (Foundry names a
    /// third-party application's service user after its client), shown by the client's name.
    pub fn service(client_id: &str, name: Option<&str>) -> User {
        User {
            display_name: name.map(str::to_string),
            principal_type: PrincipalType::Service,
            ..User::named(client_id)
        }
    }

    /// The stable UUID of this user.
    pub fn id(&self) -> String {
        name_uuid(&self.username)
    }

    /// `GET /api/v2/admin/users/getCurrent`: the platform API's `User` (camelCase; every
    /// field the SDK model declares, `attributes` a map of lists).
    pub fn platform_json(&self) -> Value {
        json!({
            "id": self.id(),
            "username": self.username,
            "givenName": self.given_name,
            "familyName": self.family_name,
            "email": self.email,
            "realm": REALM,
            "organization": Value::Null,
            "status": "ACTIVE",
            "attributes": self.attributes(),
        })
    }

    /// `GET /multipass/api/me`: multipass's own shape (the id, the username, and the
    /// attributes map of lists, which is where multipass keeps names and email).
    pub fn multipass_json(&self) -> Value {
        json!({
            "id": self.id(),
            "username": self.username,
            "realm": REALM,
            "attributes": self.attributes(),
        })
    }

    /// Multipass attributes: every value is a list of strings.
    fn attributes(&self) -> Value {
        let mut map = serde_json::Map::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(v) = value {
                map.insert(key.to_string(), json!([v]));
            }
        };
        put("multipass:email:primary", &self.email);
        put("multipass:given-name", &self.given_name);
        put("multipass:family-name", &self.family_name);
        put("multipass:display-name", &self.display_name);
        map.insert(
            "multipass:principal-type".to_string(),
            json!([match self.principal_type {
                PrincipalType::User => "USER",
                PrincipalType::Service => "SERVICE",
            }]),
        );
        Value::Object(map)
    }
}

/// A UUID (RFC 9562 version 8, variant 10) from the SHA-256 of a name.
fn name_uuid(name: &str) -> String {
    let mut bytes = [0u8; 16];
    bytes
        .copy_from_slice(&sha256::digest(format!("foundry-emulator:user:{name}").as_bytes())[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_uuids() {
        let a = User::named("alice").id();
        assert_eq!(a, User::named("alice").id());
        assert_ne!(a, User::named("bob").id());
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('8'), "version 8: {a}");
        assert!("89ab".contains(&groups[3][..1]), "variant 10: {a}");
    }

    #[test]
    fn shapes_keep_objects_and_lists() {
        let user = User {
            email: Some("a@example.com".into()),
            ..User::named("alice")
        };
        let platform = user.platform_json();
        assert_eq!(platform["status"], "ACTIVE");
        assert_eq!(platform["email"], "a@example.com");
        assert_eq!(
            platform["attributes"]["multipass:email:primary"],
            json!(["a@example.com"])
        );
        assert_eq!(
            User::service("ci-app", Some("CI")).multipass_json()["attributes"]
                ["multipass:principal-type"],
            json!(["SERVICE"])
        );
    }
}
