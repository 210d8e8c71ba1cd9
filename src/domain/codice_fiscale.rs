//! The Italian personal tax code (*codice fiscale*), as issued to natural persons.

use std::fmt;

use serde::{Serialize, Serializer};

/// A syntactically valid codice fiscale: 16 characters, upper case, with a correct
/// check character. *Omocodia* substitutions (digits replaced by letters to tell apart
/// two people who would otherwise share a code) are accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodiceFiscale(String);

/// Why a string is not a codice fiscale; the message is meant for the person who typed it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodiceFiscaleError {
    /// Not 16 characters after removing spaces.
    #[error("a codice fiscale has 16 characters, this one has {0}")]
    Length(usize),
    /// A character of the wrong class at a position.
    #[error("character {position} of the codice fiscale must be {expected}")]
    Character {
        /// 1-based position.
        position: usize,
        /// What belongs there.
        expected: &'static str,
    },
    /// The month letter is not one of ABCDEHLMPRST.
    #[error("the month letter (character 9) must be one of A B C D E H L M P R S T")]
    Month,
    /// The day is neither 1–31 (men) nor 41–71 (women).
    #[error("the day of birth (characters 10-11) must be 01-31 or 41-71")]
    Day,
    /// The last character does not match the others.
    #[error("the check character is wrong: expected {expected}, found {found}")]
    Check {
        /// The check character the other 15 call for.
        expected: char,
        /// The one given.
        found: char,
    },
}

/// Letters that replace the digits 0..=9 in *omocodia* codes.
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";
/// Positions (0-based) that hold digits in an ordinary code and may hold omocodia letters.
const DIGIT_POSITIONS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
const MONTHS: &[u8] = b"ABCDEHLMPRST";
/// Values of characters in odd (1-based) positions, indexed by digit or by letter.
const ODD_VALUES: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

impl CodiceFiscale {
    /// Parses a code, ignoring case and surrounding or inner spaces.
    pub fn parse(input: &str) -> Result<Self, CodiceFiscaleError> {
        let code: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let count = code.chars().count();
        if count != 16 || !code.is_ascii() {
            return Err(CodiceFiscaleError::Length(count));
        }
        let bytes = code.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let ok = if DIGIT_POSITIONS.contains(&i) {
                b.is_ascii_digit() || OMOCODIA.contains(&b)
            } else {
                b.is_ascii_uppercase()
            };
            if !ok {
                let expected = if DIGIT_POSITIONS.contains(&i) {
                    "a digit (or one of L M N P Q R S T U V)"
                } else {
                    "a letter"
                };
                return Err(CodiceFiscaleError::Character {
                    position: i + 1,
                    expected,
                });
            }
        }
        if !MONTHS.contains(&bytes[8]) {
            return Err(CodiceFiscaleError::Month);
        }
        let day = digit_value(bytes[9]) * 10 + digit_value(bytes[10]);
        if !((1..=31).contains(&day) || (41..=71).contains(&day)) {
            return Err(CodiceFiscaleError::Day);
        }
        let expected = check_character(&bytes[..15]);
        let found = bytes[15] as char;
        if expected != found {
            return Err(CodiceFiscaleError::Check { expected, found });
        }
        Ok(Self(code))
    }

    /// The code as 16 upper-case characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digit a position stands for, undoing an omocodia substitution.
fn digit_value(b: u8) -> u32 {
    match OMOCODIA.iter().position(|&l| l == b) {
        Some(d) => d as u32,
        None => u32::from(b - b'0'),
    }
}

/// Computes the check character over the first 15 characters.
fn check_character(first15: &[u8]) -> char {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let index = if b.is_ascii_digit() {
                b - b'0'
            } else {
                b - b'A'
            } as usize;
            if i % 2 == 0 {
                ODD_VALUES[index]
            } else {
                index as u32
            }
        })
        .sum();
    (b'A' + (sum % 26) as u8) as char
}

impl fmt::Display for CodiceFiscale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CodiceFiscale {
    // A codice fiscale is personal data: keep it out of debug logs except for its shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodiceFiscale({}…)", &self.0[..6])
    }
}

impl Serialize for CodiceFiscale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_valid_code_in_any_case_and_spacing() {
        let cf = CodiceFiscale::parse(" rssmra85t10a562s ").expect("valid code");
        assert_eq!(cf.as_str(), "RSSMRA85T10A562S");
        assert!(CodiceFiscale::parse("RSS MRA 85T10 A562S").is_ok());
    }

    #[test]
    fn accepts_omocodia_substitutions_with_their_own_check_character() {
        // The last digit of the municipality code (2) replaced by N changes the check character.
        let mut code = b"RSSMRA85T10A56N".to_vec();
        let check = check_character(&code);
        code.push(check as u8);
        let code = String::from_utf8(code).expect("ascii");
        assert!(
            CodiceFiscale::parse(&code).is_ok(),
            "{code} should be valid"
        );
    }

    #[test]
    fn rejects_a_wrong_check_character() {
        assert_eq!(
            CodiceFiscale::parse("RSSMRA85T10A562T"),
            Err(CodiceFiscaleError::Check {
                expected: 'S',
                found: 'T'
            })
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            CodiceFiscale::parse("RSSMRA85T10A562"),
            Err(CodiceFiscaleError::Length(15))
        );
        assert!(matches!(
            CodiceFiscale::parse("RSSMRA85T10A5X2S"),
            Err(CodiceFiscaleError::Character { position: 14, .. })
        ));
        assert_eq!(
            CodiceFiscale::parse("RSSMRA85Z10A562S"),
            Err(CodiceFiscaleError::Month)
        );
        assert_eq!(
            CodiceFiscale::parse("RSSMRA85T35A562S"),
            Err(CodiceFiscaleError::Day)
        );
        assert!(matches!(
            CodiceFiscale::parse("RSSMRA85T10A562SÀ"),
            Err(CodiceFiscaleError::Length(17))
        ));
    }
}
