//! The platform's request signature and timestamp format, written from the platform's
//! documentation, independently of the gateway's signing recipes.

use md5::{Digest, Md5};
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The platform's clock zone: China Standard Time, UTC+8, no daylight saving.
pub const PLATFORM_OFFSET: UtcOffset = offset!(+8);

const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Computes the platform's signature over a request's form fields.
///
/// Rules: take every field except `sign`, drop those whose value is empty, sort by field name
/// in byte order (duplicated names are then ordered by value, so the result does not depend
/// on the order they were sent in), concatenate `name=value` with no separator between pairs,
/// put the app secret before *and* after the string, MD5 it and write the digest as
/// upper-case hex. Names and values are used as sent (already URL-decoded), no escaping.
///
/// ```
/// let fields = [
///     ("method".to_string(), "yanxuan.item.id.batch.get".to_string()),
///     ("appKey".to_string(), "bd8d8cd62fb5489586858161efcea388".to_string()),
///     ("timestamp".to_string(), "2017-06-15 14:21:37".to_string()),
/// ];
/// assert_eq!(
///     channel_sim::sign("db4c3fe3515543bfb1cf6beb6f3e3d56", &fields),
///     "E963E8E38CDF3841220E79BEB9469618",
/// );
/// ```
pub fn sign(secret: &str, fields: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(name, value)| name != "sign" && !value.is_empty())
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    pairs.sort_unstable();
    let mut hasher = Md5::new();
    hasher.update(secret.as_bytes());
    for (name, value) in pairs {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
    }
    hasher.update(secret.as_bytes());
    hex::encode_upper(hasher.finalize())
}

/// Formats an instant the way the platform writes timestamps: `yyyy-MM-dd HH:mm:ss` in UTC+8.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(PLATFORM_OFFSET)
        .format(TIMESTAMP_FORMAT)
        .unwrap_or_default()
}

/// Parses a platform timestamp (`yyyy-MM-dd HH:mm:ss`, read as UTC+8).
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, TIMESTAMP_FORMAT)
        .ok()
        .map(|t| t.assume_offset(PLATFORM_OFFSET))
}

/// Builds a complete, signed, URL-encoded request body for the channel API: `appKey`,
/// `timestamp` (formatted from `at`), `method`, the extra `params`, and `sign`.
/// A convenience for tests that talk to the simulator directly.
pub fn signed_form(
    app_key: &str,
    app_secret: &str,
    method: &str,
    at: OffsetDateTime,
    params: &[(&str, &str)],
) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("appKey".to_string(), app_key.to_string()),
        ("timestamp".to_string(), format_timestamp(at)),
        ("method".to_string(), method.to_string()),
    ];
    fields.extend(
        params
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    let signature = sign(app_secret, &fields);
    fields.push(("sign".to_string(), signature));
    serde_urlencoded::to_string(&fields).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn md5_upper(s: &str) -> String {
        hex::encode_upper(Md5::digest(s.as_bytes()))
    }

    #[test]
    fn published_vector() {
        let fields = f(&[
            ("method", "yanxuan.item.id.batch.get"),
            ("appKey", "bd8d8cd62fb5489586858161efcea388"),
            ("timestamp", "2017-06-15 14:21:37"),
        ]);
        assert_eq!(
            sign("db4c3fe3515543bfb1cf6beb6f3e3d56", &fields),
            "E963E8E38CDF3841220E79BEB9469618"
        );
    }

    #[test]
    fn sorted_by_name_no_separator_secret_both_sides() {
        let fields = f(&[("b", "2"), ("a", "1"), ("C", "3")]);
        // Byte order: upper-case letters sort before lower-case ones.
        assert_eq!(sign("S", &fields), md5_upper("SC=3a=1b=2S"));
    }

    #[test]
    fn empty_values_and_sign_are_left_out() {
        let with = f(&[("a", "1"), ("empty", ""), ("sign", "WHATEVER"), ("b", "2")]);
        let without = f(&[("a", "1"), ("b", "2")]);
        assert_eq!(sign("S", &with), sign("S", &without));
        assert_eq!(sign("S", &with), md5_upper("Sa=1b=2S"));
    }

    #[test]
    fn values_are_not_escaped_and_duplicates_are_stable() {
        let fields = f(&[("x", "a b&c=d"), ("k", "中")]);
        assert_eq!(sign("S", &fields), md5_upper("Sk=中x=a b&c=dS"));
        let one = f(&[("a", "2"), ("a", "1")]);
        let two = f(&[("a", "1"), ("a", "2")]);
        assert_eq!(sign("S", &one), sign("S", &two));
    }

    #[test]
    fn upper_case_hex() {
        let s = sign("S", &f(&[("a", "1")]));
        assert_eq!(s.len(), 32);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
    }

    #[test]
    fn timestamps_are_utc_plus_8() {
        let t = datetime!(2017-06-15 06:21:37 UTC);
        assert_eq!(format_timestamp(t), "2017-06-15 14:21:37");
        assert_eq!(parse_timestamp("2017-06-15 14:21:37"), Some(t));
        assert_eq!(parse_timestamp("2017-06-15T14:21:37"), None);
        assert_eq!(parse_timestamp("2017-06-15 14:21"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn signed_form_verifies() {
        let body = signed_form(
            "K",
            "S",
            "m",
            datetime!(2024-01-01 00:00:00 UTC),
            &[("skuIds", "1,2")],
        );
        let fields: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
        let sent = fields
            .iter()
            .find(|(k, _)| k == "sign")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert_eq!(sent, sign("S", &fields));
        assert!(body.contains("timestamp=2024-01-01+08%3A00%3A00"));
    }
}
