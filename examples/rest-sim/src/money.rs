//! Euro amounts: decimal strings with exactly two decimals on the wire, integer cents inside.

/// Parses `"19.99"` (digits, a dot, exactly two digits; no sign, no exponent) into 1999 cents.
pub fn parse_cents(text: &str) -> Option<i64> {
    let (units, cents) = text.split_once('.')?;
    if units.is_empty()
        || cents.len() != 2
        || !units.bytes().all(|b| b.is_ascii_digit())
        || !cents.bytes().all(|b| b.is_ascii_digit())
        || (units.len() > 1 && units.starts_with('0'))
    {
        return None;
    }
    let units: i64 = units.parse().ok()?;
    let cents: i64 = cents.parse().ok()?;
    units.checked_mul(100)?.checked_add(cents)
}

/// Formats 1999 cents as `"19.99"` (negative amounts are not used by the API).
pub fn format_cents(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}
