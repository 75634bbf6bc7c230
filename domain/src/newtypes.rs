//! Input that has been checked: each newtype can only be built from a valid value, so the
//! use cases never see a malformed key, email or code.

use protocol::fingerprint::{self, Components};
use rand::Rng;

use crate::{Error, Result};

/// Crockford base32: no I, L, O or U, so keys survive being read aloud and retyped.
const KEY_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a license key (5 bits each: 125 bits of entropy).
const KEY_SYMBOLS: usize = 25;
/// Symbols per dash-separated group.
const KEY_GROUP: usize = 5;

/// A license key: 25 Crockford base32 symbols shown in five groups of five
/// (`7KQ2M-...`). Parsing forgives case, dashes, spaces and the look-alikes O/I/L.
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseKey(String);

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseKey(..{})", self.last4())
    }
}

impl LicenseKey {
    /// A new key from the operating system's CSPRNG.
    #[must_use]
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let symbols: String = (0..KEY_SYMBOLS)
            .map(|_| char::from(KEY_ALPHABET[rng.gen_range(0..KEY_ALPHABET.len())]))
            .collect();
        Self(symbols)
    }

    /// Reads a key as a person or program typed it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it is not 25 base32 symbols.
    pub fn parse(input: &str) -> Result<Self> {
        let mut symbols = String::with_capacity(KEY_SYMBOLS);
        for c in input.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !KEY_ALPHABET.contains(&(c as u8)) || symbols.len() == KEY_SYMBOLS {
                return Err(Error::InvalidInput("not a license key".into()));
            }
            symbols.push(c);
        }
        if symbols.len() == KEY_SYMBOLS {
            Ok(Self(symbols))
        } else {
            Err(Error::InvalidInput("not a license key".into()))
        }
    }

    /// The ungrouped symbols: the form that is hashed for lookups.
    #[must_use]
    pub fn canonical(&self) -> &str {
        &self.0
    }

    /// The key as shown to people: five dash-separated groups.
    #[must_use]
    pub fn display(&self) -> String {
        let groups: Vec<&str> = self
            .0
            .as_bytes()
            .chunks(KEY_GROUP)
            .map(|g| std::str::from_utf8(g).unwrap_or_default())
            .collect();
        groups.join("-")
    }

    /// The last four symbols (all that license files and masked views show).
    #[must_use]
    pub fn last4(&self) -> &str {
        &self.0[KEY_SYMBOLS - 4..]
    }
}

/// Masks a key for roles that may not see it: only the last four symbols remain.
#[must_use]
pub fn masked_key(last4: &str) -> String {
    format!("XXXXX-XXXXX-XXXXX-XXXXX-X{last4}")
}

/// Trimmed, non-empty text of at most `MAX` characters without control characters: names,
/// reasons, external ids. Built with [`Text::parse`], which names the field in its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    /// Checks `value` for the field called `field`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::InvalidInput(format!("{field} must not be empty")));
        }
        if value.chars().count() > MAX {
            return Err(Error::InvalidInput(format!("{field} must be at most {MAX} characters")));
        }
        if value.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "{field} must not contain control characters"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    /// [`Text::parse`] for an optional field.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `field`.
    pub fn optional(field: &str, value: Option<&str>) -> Result<Option<Self>> {
        value.map(|v| Self::parse(field, v)).transpose()
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A device fingerprint as the client sends it: 1-256 characters of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl TryFrom<&str> for Fingerprint {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        Text::<256>::parse("fingerprint", value).map(|t| Self(t.into_inner()))
    }
}

impl Fingerprint {
    /// The fingerprint.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The fingerprint, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A device's fingerprint components, checked by the protocol's rules (at most 32, names
/// lower-cased and unique, no control characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceComponents(Components);

impl TryFrom<&[(String, String)]> for DeviceComponents {
    type Error = Error;

    fn try_from(pairs: &[(String, String)]) -> Result<Self> {
        fingerprint::components(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .map(Self)
            .map_err(|e| Error::InvalidInput(e.to_string()))
    }
}

impl TryFrom<&Components> for DeviceComponents {
    type Error = Error;

    fn try_from(components: &Components) -> Result<Self> {
        let pairs: Vec<(String, String)> = components.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        Self::try_from(pairs.as_slice())
    }
}

impl DeviceComponents {
    /// The components.
    #[must_use]
    pub fn as_map(&self) -> &Components {
        &self.0
    }
}

impl From<DeviceComponents> for entity::columns::ComponentMap {
    fn from(components: DeviceComponents) -> Self {
        Self(components.0)
    }
}

/// A device's Ed25519 public key (base64 of the 32 raw bytes), for its signed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePublicKey(String);

impl TryFrom<&str> for DevicePublicKey {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        let key = Text::<200>::parse("devicePublicKey", value)?.into_inner();
        protocol::offline::decode_public_key(&key).map_err(|e| Error::InvalidInput(format!("devicePublicKey: {e}")))?;
        Ok(Self(key))
    }
}

impl DevicePublicKey {
    /// The key as stored (base64).
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A free-form JSON object of at most 16 KiB (a device's variables).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject(serde_json::Value);

impl TryFrom<serde_json::Value> for JsonObject {
    type Error = Error;

    fn try_from(value: serde_json::Value) -> Result<Self> {
        if value.is_object() && value.to_string().len() <= 16 * 1024 {
            Ok(Self(value))
        } else {
            Err(Error::InvalidInput(
                "variables must be a JSON object of at most 16 KiB".into(),
            ))
        }
    }
}

impl JsonObject {
    /// The object.
    #[must_use]
    pub fn into_inner(self) -> serde_json::Value {
        self.0
    }
}

/// A code (product code, entitlement, meter): 1-64 of `A-Z a-z 0-9 _ - . :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Code(String);

impl Code {
    /// Checks `value` for the field called `field`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::InvalidInput(format!(
                "{field} must be 1-64 characters of letters, digits, '_', '-', '.' or ':'"
            )))
        }
    }

    /// A list of distinct codes, in the order given.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad or repeated code.
    pub fn list(field: &str, values: &[String]) -> Result<Vec<Self>> {
        let mut out: Vec<Self> = Vec::with_capacity(values.len());
        for value in values {
            let code = Self::parse(field, value)?;
            if out.contains(&code) {
                return Err(Error::InvalidInput(format!("{field} lists {value} twice")));
            }
            out.push(code);
        }
        Ok(out)
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The code, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The stored form of a code list (entitlements).
#[must_use]
pub fn code_list(codes: Vec<Code>) -> entity::columns::StringList {
    entity::columns::StringList(codes.into_iter().map(Code::into_inner).collect())
}

/// An email address, lower-cased: one `@`, a non-empty local part, a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl TryFrom<&str> for Email {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        let value = value.trim().to_lowercase();
        let valid = value.len() <= 254
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && (domain.contains('.') || domain == "localhost")
            })
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(value))
        } else {
            Err(Error::InvalidInput(format!("{value:?} is not an email address")))
        }
    }
}

impl Email {
    /// The address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An idempotency key: 1-255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl TryFrom<&str> for IdempotencyKey {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self> {
        if !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::InvalidInput(
                "idempotencyKey must be 1-255 printable ASCII characters".into(),
            ))
        }
    }
}

impl IdempotencyKey {
    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password: 10-256 characters.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn password(value: &str) -> Result<&str> {
    let n = value.chars().count();
    if (10..=256).contains(&n) {
        Ok(value)
    } else {
        Err(Error::InvalidInput("a password must be 10-256 characters".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_back_in_any_typing() -> Result<()> {
        let key = LicenseKey::generate();
        let shown = key.display();
        assert_eq!(shown.len(), 29);
        assert_eq!(LicenseKey::parse(&shown)?, key);
        assert_eq!(LicenseKey::parse(&shown.to_lowercase().replace('-', " "))?, key);
        assert_ne!(LicenseKey::generate(), key);
        Ok(())
    }

    #[test]
    fn look_alikes_are_forgiven() -> Result<()> {
        let a = LicenseKey::parse("00000-11111-22222-33333-44444")?;
        assert_eq!(LicenseKey::parse("OoOoO-IiLlI-22222-33333-44444")?, a);
        assert!(LicenseKey::parse("00000-11111-22222-33333-4444").is_err());
        assert!(LicenseKey::parse("00000-11111-22222-33333-44444-5").is_err());
        assert!(LicenseKey::parse("UUUUU-11111-22222-33333-44444").is_err());
        Ok(())
    }

    #[test]
    fn emails_and_codes() {
        assert_eq!(
            Email::try_from(" Ops@Example.COM ")
                .ok()
                .map(Email::into_inner)
                .as_deref(),
            Some("ops@example.com")
        );
        assert!(Email::try_from("nope").is_err());
        assert!(Email::try_from("a@b@c.d").is_err());
        assert!(Code::parse("code", "pro-2026.x:y_z").is_ok());
        assert!(Code::parse("code", "has space").is_err());
        assert!(Code::list("entitlements", &["a".into(), "a".into()]).is_err());
        assert!(IdempotencyKey::try_from("k".repeat(256).as_str()).is_err());
        assert!(IdempotencyKey::try_from("order-5521").is_ok());
        assert!(Text::<3>::parse("name", " abc ").is_ok());
        assert!(Text::<3>::parse("name", "abcd").is_err());
        assert!(Text::<3>::parse("name", "  ").is_err());
        assert!(Fingerprint::try_from("x".repeat(257).as_str()).is_err());
        assert!(JsonObject::try_from(serde_json::json!([1])).is_err());
        assert!(DevicePublicKey::try_from("not base64").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = LicenseKey::parse(&s);
            let _ = Email::try_from(s.as_str());
            let _ = Code::parse("c", &s);
            let _ = Text::<16>::parse("t", &s);
            let _ = IdempotencyKey::try_from(s.as_str());
        }

        #[test]
        fn keys_have_125_bits_of_alphabet(_n in 0..20u8) {
            let key = LicenseKey::generate();
            prop_assert_eq!(key.canonical().len(), 25);
            prop_assert!(key.canonical().bytes().all(|b| KEY_ALPHABET.contains(&b)));
        }
    }
}
