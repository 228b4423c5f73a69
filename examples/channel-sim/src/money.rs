//! Money as the platform speaks it: yuan decimal strings with two decimals ("12.50"), kept
//! internally as integer fen. No floating point anywhere.

use serde_json::Value;

/// Formats an amount in fen as a yuan string with exactly two decimals: `5` → `"0.05"`,
/// `1250` → `"12.50"`, `-5` → `"-0.05"`.
pub fn format_fen(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a non-negative yuan decimal string into fen.
///
/// Accepts `"12"`, `"12.5"`, `"12.50"` and extra decimals only when they are zeros
/// (`"12.500"`). Rejects signs, blanks, exponents, `"12."`, `".5"`, sub-fen amounts
/// (`"0.005"`) and values that overflow `i64` fen.
pub fn parse_yuan(s: &str) -> Option<i64> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => {
            if frac.is_empty() {
                return None;
            }
            (int, frac)
        }
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (cents, rest) = frac.split_at(frac.len().min(2));
    if !rest.bytes().all(|b| b == b'0') {
        return None;
    }
    let mut fen_part: i64 = 0;
    for (i, b) in cents.bytes().enumerate() {
        let digit = i64::from(b - b'0');
        fen_part += if i == 0 { digit * 10 } else { digit };
    }
    let yuan: i64 = int.parse().ok()?;
    yuan.checked_mul(100)?.checked_add(fen_part)
}

/// Reads a yuan amount from a JSON value: a decimal string, or (leniently, as a Java
/// platform would coerce it) a JSON number written in plain decimal notation.
pub(crate) fn json_yuan(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_yuan(s),
        Value::Number(n) => parse_yuan(&n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format_fen(5), "0.05");
        assert_eq!(format_fen(1250), "12.50");
        assert_eq!(format_fen(0), "0.00");
        assert_eq!(format_fen(100), "1.00");
        assert_eq!(format_fen(29900), "299.00");
        assert_eq!(format_fen(-5), "-0.05");
        assert_eq!(format_fen(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn parses_yuan() {
        assert_eq!(parse_yuan("12.50"), Some(1250));
        assert_eq!(parse_yuan("12.5"), Some(1250));
        assert_eq!(parse_yuan("12"), Some(1200));
        assert_eq!(parse_yuan("0.05"), Some(5));
        assert_eq!(parse_yuan("0.5"), Some(50));
        assert_eq!(parse_yuan("12.500"), Some(1250));
        assert_eq!(parse_yuan("007.10"), Some(710));
    }

    #[test]
    fn rejects_bad_yuan() {
        for bad in [
            "",
            ".",
            "12.",
            ".5",
            "-1",
            "+1",
            "1e2",
            "12.505",
            "0.005",
            "1,00",
            " 1",
            "1 ",
            "abc",
            "１２",
            "99999999999999999999",
        ] {
            assert_eq!(parse_yuan(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_amounts() {
        assert_eq!(json_yuan(&serde_json::json!("3.20")), Some(320));
        assert_eq!(json_yuan(&serde_json::json!(3.2)), Some(320));
        assert_eq!(json_yuan(&serde_json::json!(3)), Some(300));
        assert_eq!(json_yuan(&serde_json::json!(-3)), None);
        assert_eq!(json_yuan(&serde_json::json!(null)), None);
        assert_eq!(json_yuan(&serde_json::json!(true)), None);
    }

    #[test]
    fn round_trip() {
        for fen in [0, 1, 9, 10, 99, 100, 101, 1250, 123_456_789] {
            assert_eq!(parse_yuan(&format_fen(fen)), Some(fen));
        }
    }
}
