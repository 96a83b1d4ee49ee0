//! The public error body: `{"error": {"code": "snake_case", "message": "...", "field": "..."}}`.
//!
//! `code` is stable and machine-readable; `message` tells a person what to do next; `field`
//! names the input at fault when there is one.

use serde::{Deserialize, Serialize};

/// The whole error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    /// The body as JSON bytes. Serializing these plain strings cannot fail.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\",\"message\":\"error body could not be encoded\"}}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_omitted_when_absent() {
        let body = ErrorBody::new("session_missing", "start a session first");
        assert_eq!(
            String::from_utf8(body.to_json()).unwrap(),
            r#"{"error":{"code":"session_missing","message":"start a session first"}}"#
        );
        let body = body.with_field("cache");
        assert!(String::from_utf8(body.to_json())
            .unwrap()
            .contains(r#""field":"cache""#));
    }
}
