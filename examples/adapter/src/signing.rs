//! The platform's request signature and timestamps, written by hand from its documentation
//! (the same recipe as the `request.sign` section of `platforms/yanxuan.yaml`).

use md5::{Digest, Md5};
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, UtcOffset};

/// The platform's clock zone: China Standard Time, UTC+8.
const PLATFORM_OFFSET: UtcOffset = offset!(+8);

const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Formats `at` the way the platform reads timestamps: `yyyy-MM-dd HH:mm:ss` in UTC+8.
pub fn timestamp(at: OffsetDateTime) -> Result<String, time::error::Format> {
    at.to_offset(PLATFORM_OFFSET).format(TIMESTAMP_FORMAT)
}

/// The signature of a form: every field but `sign` with a non-empty value, sorted by name
/// (then value), written `name=value` with no separator, the app secret before and after,
/// MD5, upper-case hex.
pub fn sign(secret: &str, fields: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(name, value)| *name != "sign" && !value.is_empty())
        .copied()
        .collect();
    pairs.sort_unstable();
    let mut md5 = Md5::new();
    md5.update(secret.as_bytes());
    for (name, value) in pairs {
        md5.update(name.as_bytes());
        md5.update(b"=");
        md5.update(value.as_bytes());
    }
    md5.update(secret.as_bytes());
    hex::encode_upper(md5.finalize())
}

/// The URL-encoded body of one call: `appKey`, `timestamp`, `method`, the method's `params`,
/// then `sign` — the fields and order the gateway sends.
pub fn signed_form(
    app_key: &str,
    app_secret: &str,
    at: OffsetDateTime,
    method: &str,
    params: &[(&str, &str)],
) -> Result<String, String> {
    let timestamp = timestamp(at).map_err(|e| format!("cannot format the timestamp: {e}"))?;
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 4);
    fields.push(("appKey", app_key));
    fields.push(("timestamp", &timestamp));
    fields.push(("method", method));
    fields.extend_from_slice(params);
    let signature = sign(app_secret, &fields);
    fields.push(("sign", &signature));
    serde_urlencoded::to_string(&fields).map_err(|e| format!("cannot encode the form: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn published_vector() {
        let fields = [
            ("method", "yanxuan.item.id.batch.get"),
            ("appKey", "bd8d8cd62fb5489586858161efcea388"),
            ("timestamp", "2017-06-15 14:21:37"),
        ];
        assert_eq!(
            sign("db4c3fe3515543bfb1cf6beb6f3e3d56", &fields),
            "E963E8E38CDF3841220E79BEB9469618"
        );
    }

    #[test]
    fn form_has_the_gateway_fields_in_order() {
        let body = signed_form(
            "K",
            "S",
            datetime!(2024-01-01 00:00:00 UTC),
            "yanxuan.item.batch.get",
            &[("itemIds", "1001")],
        )
        .unwrap();
        let expected_sign = sign(
            "S",
            &[
                ("appKey", "K"),
                ("timestamp", "2024-01-01 08:00:00"),
                ("method", "yanxuan.item.batch.get"),
                ("itemIds", "1001"),
            ],
        );
        assert_eq!(
            body,
            format!(
                "appKey=K&timestamp=2024-01-01+08%3A00%3A00&method=yanxuan.item.batch.get&itemIds=1001&sign={expected_sign}"
            )
        );
    }
}
