//! Input that has been checked: each newtype can only be built from a valid value, so the
//! use cases never see a malformed key, email or code.

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

/// A trimmed, non-empty piece of text of at most `max` characters.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::InvalidInput(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Error::InvalidInput(format!("{field} must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// [`text`] for an optional field.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    value.map(|v| text(field, v, max)).transpose()
}

/// A code (product code, entitlement, meter): 1-64 of `A-Z a-z 0-9 _ - . :`.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn code(field: &str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(value.to_owned())
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
pub fn codes(field: &str, values: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let value = code(field, value)?;
        if out.contains(&value) {
            return Err(Error::InvalidInput(format!("{field} lists {value} twice")));
        }
        out.push(value);
    }
    Ok(out)
}

/// An email address, lower-cased: one `@`, a non-empty local part, a dotted domain.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn email(value: &str) -> Result<String> {
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
        Ok(value)
    } else {
        Err(Error::InvalidInput(format!("{value:?} is not an email address")))
    }
}

/// An idempotency key: 1-255 printable ASCII characters.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn idempotency_key(value: &str) -> Result<String> {
    if !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidInput(
            "idempotencyKey must be 1-255 printable ASCII characters".into(),
        ))
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
        assert_eq!(email(" Ops@Example.COM ").ok().as_deref(), Some("ops@example.com"));
        assert!(email("nope").is_err());
        assert!(email("a@b@c.d").is_err());
        assert!(code("code", "pro-2026.x:y_z").is_ok());
        assert!(code("code", "has space").is_err());
        assert!(codes("entitlements", &["a".into(), "a".into()]).is_err());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = LicenseKey::parse(&s);
            let _ = email(&s);
            let _ = code("c", &s);
        }

        #[test]
        fn keys_have_125_bits_of_alphabet(_n in 0..20u8) {
            let key = LicenseKey::generate();
            prop_assert_eq!(key.canonical().len(), 25);
            prop_assert!(key.canonical().bytes().all(|b| KEY_ALPHABET.contains(&b)));
        }
    }
}
