//! The sample platform's side, by hand: signed channel-API calls (the "simulator direct" row)
//! and signed notifications (callback ingest), with the recipe of `platforms/yanxuan.yaml`.

use md5::{Digest, Md5};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};

const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// MD5 over the sorted `k=v` pairs (all but `sign`), the secret before and after, upper hex.
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

/// A signed, URL-encoded form: `appKey`, `timestamp` (now, UTC+8), `method`, `params`, `sign`.
pub fn signed_form(
    app_key: &str,
    app_secret: &str,
    method: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<String> {
    let timestamp = OffsetDateTime::now_utc()
        .to_offset(offset!(+8))
        .format(TIMESTAMP_FORMAT)?;
    let mut fields: Vec<(&str, &str)> = vec![
        ("appKey", app_key),
        ("timestamp", &timestamp),
        ("method", method),
    ];
    fields.extend_from_slice(params);
    let signature = sign(app_secret, &fields);
    fields.push(("sign", &signature));
    Ok(serde_urlencoded::to_string(&fields)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn form_carries_its_signature() {
        let body = signed_form("K", "S", "m", &[("notifyId", "n-1")]).unwrap();
        let fields: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sent = pairs.iter().find(|(k, _)| *k == "sign").unwrap().1;
        assert_eq!(sent, sign("S", &pairs));
        assert_eq!(pairs[0], ("appKey", "K"));
    }
}
