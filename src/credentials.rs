//! Passwords (Argon2id) and TOTP second factors (RFC 6238) of staff, auditors and admins,
//! and the one-time secrets of sign-in codes and activation links.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Seconds per TOTP time step.
const TOTP_STEP: u64 = 30;
/// Steps either side of now a code is accepted for (clock drift of the phone).
const TOTP_SKEW: u16 = 1;

/// Why a password is refused.
#[derive(Debug, thiserror::Error)]
pub enum WeakPassword {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("la password deve avere almeno {MIN_PASSWORD_CHARS} caratteri")]
    TooShort,
    /// Longer than anyone types (and than Argon2 should be asked to hash).
    #[error("la password non può superare 256 caratteri")]
    TooLong,
    /// One repeated character, or the account's own e-mail or name.
    #[error("la password è troppo facile da indovinare")]
    Guessable,
}

/// Checks a new password: its length, and that it is not trivially guessable from the account.
pub fn check_new_password(password: &str, account_words: &[&str]) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort);
    }
    if chars > 256 {
        return Err(WeakPassword::TooLong);
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    if lower.chars().all(|c| Some(c) == first)
        || account_words
            .iter()
            .any(|w| w.len() >= 4 && lower.contains(&w.to_lowercase()))
    {
        return Err(WeakPassword::Guessable);
    }
    Ok(())
}

/// The Argon2id hash of `password` (a PHC string with its salt and parameters).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(stored) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Hashes a password nobody has, so that an unknown account costs as much time as a known
/// one and the answer's delay does not tell which accounts exist.
pub fn burn_password_time(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored =
        DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default());
    let _ = verify_password(password, stored);
}

/// A fresh TOTP secret (160 random bits, as RFC 4226 recommends), base32.
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    #[expect(
        clippy::expect_used,
        reason = "no entropy means no safe secrets at all"
    )]
    getrandom::fill(&mut bytes).expect("operating-system random source");
    Secret::new_stack(bytes).to_base32()
}

/// The TOTP of a base32 secret (SHA-1, 6 digits, 30 s steps, one step of drift either way),
/// labelled for authenticator apps.
pub fn totp(secret: &str, issuer: &str, account: &str) -> anyhow::Result<Totp> {
    let secret =
        Secret::try_from_base32(secret).map_err(|e| anyhow::anyhow!("TOTP secret: {e}"))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(TOTP_SKEW)
        .with_step_duration(TOTP_STEP)
        .with_secret(secret)
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| anyhow::anyhow!("TOTP: {e}"))
}

/// The time step a code is right for, at `now` (seconds since the epoch), within the
/// accepted drift; `None` for a wrong or malformed code.
pub fn totp_step(totp: &Totp, code: &str, now: u64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp.check(&code, now)
        .and_then(|step| i64::try_from(step).ok())
}

/// An `otpauth://` URI and its QR code as SVG, for an authenticator app to read.
pub fn enrolment(totp: &Totp) -> anyhow::Result<(String, String)> {
    let uri = totp
        .to_url()
        .map_err(|e| anyhow::anyhow!("TOTP URL: {e}"))?;
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    // Inline in a page: no XML declaration, and a name for screen readers.
    let start = svg.find("<svg").unwrap_or(0);
    let svg = svg[start..].replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"Codice QR per l'app di autenticazione\"",
        1,
    );
    Ok((uri, svg))
}

/// 32 random bytes as hex: the secret of a session cookie or an activation link.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    #[expect(
        clippy::expect_used,
        reason = "no entropy means no safe secrets at all"
    )]
    getrandom::fill(&mut bytes).expect("operating-system random source");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let stored = hash_password("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify_password("correct horse battery", &stored));
        assert!(!verify_password("correct horse batterY", &stored));
        assert!(!verify_password("anything", "not a PHC string"));
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(matches!(
            check_new_password("short", &[]),
            Err(WeakPassword::TooShort)
        ));
        assert!(matches!(
            check_new_password("aaaaaaaaaaaaaaa", &[]),
            Err(WeakPassword::Guessable)
        ));
        assert!(matches!(
            check_new_password("mario.rossi@comune.it!", &["mario.rossi@comune.it"]),
            Err(WeakPassword::Guessable)
        ));
        assert!(check_new_password("ponte vecchio sul fiume", &["Mario Rossi"]).is_ok());
    }

    #[test]
    fn totp_matches_rfc_6238_and_accepts_one_step_of_drift() {
        // RFC 6238, appendix B: the SHA-1 secret "12345678901234567890" at T = 59 s gives
        // 94287082 (8 digits); its last 6 are the 6-digit code.
        let secret = Secret::new_stack(*b"12345678901234567890").to_base32();
        let t = totp(&secret, "Comune", "a@b.it").expect("totp");
        assert_eq!(t.generate(59).to_string(), "287082");
        assert_eq!(totp_step(&t, "287082", 59), Some(1));
        assert_eq!(totp_step(&t, "287 082", 59 + 30), Some(1));
        assert_eq!(totp_step(&t, "287082", 59 + 90), None);
        assert_eq!(totp_step(&t, "12345", 59), None);
        let (uri, svg) = enrolment(&t).expect("enrolment");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(svg.contains("<svg"), "{svg}");
    }
}
