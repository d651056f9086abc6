//! Checks on what clients name and write: ids, text fields, and the server's clock.

use crate::error::ApiError;

/// Largest uid or gid: ids travel as JSON numbers, which clients read as doubles.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Refuses text with U+0000, which PostgreSQL cannot store in `text` (and no client means).
pub fn no_nul(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        Err(ApiError::bad_request(format!(
            "{field} contains the character U+0000"
        )))
    } else {
        Ok(())
    }
}

/// Checks a uid or gid: positive and representable in a JSON double.
pub fn valid_id(id: u64) -> Result<u64, ApiError> {
    if id == 0 || id > MAX_ID {
        Err(ApiError::bad_request(format!(
            "id {id} is out of range 1..2^53"
        )))
    } else {
        Ok(id)
    }
}

/// Current server time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Refuses a text field longer than `max` characters, or holding U+0000.
pub fn check_length(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(text) if text.chars().count() > max => Err(ApiError::bad_request(format!(
            "{field} is longer than {max} characters"
        ))),
        Some(text) => no_nul(field, text),
        None => Ok(()),
    }
}
