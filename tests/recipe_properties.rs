//! Properties of recipes: verification accepts what signing produced, and refuses any
//! one-byte change of the body, a signed header, the timestamp or the signature.

use entrepot::engine::build::{BuildInput, build};
use entrepot::recipe::{MemoryReplayGuard, Parts, Rejection, RunEnv};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::vectors::platform;

fn signed(
    file: &str,
    payload: &str,
    now: OffsetDateTime,
    nonce: &str,
    creds: &Map<String, Value>,
) -> Parts {
    let p = platform(file);
    let op = &p.operations["product.get"];
    let input = json!({ "payload": payload });
    let req = build(
        &p,
        op,
        &BuildInput {
            input: &input,
            credentials: creds,
            now,
            nonce: Some(nonce.into()),
            token: None,
        },
    )
    .unwrap();
    Parts {
        method: "POST".into(),
        url: req.url.clone(),
        path: "/hook".into(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        ..Parts::default()
    }
}

fn flip(bytes: &mut [u8], index: usize, with: u8) {
    let i = index % bytes.len();
    bytes[i] = if bytes[i] == with {
        with.wrapping_add(1)
    } else {
        with
    };
}

fn header_mut<'a>(parts: &'a mut Parts, name: &str) -> &'a mut String {
    &mut parts
        .headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .unwrap()
        .1
}

fn flip_text(text: &mut String, index: usize, with: u8) {
    let mut bytes = text.clone().into_bytes();
    // Stay printable ASCII, as header values are.
    flip(&mut bytes, index, b'!' + with % 90);
    *text = String::from_utf8(bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn standard_webhooks_round_trip(
        payload in "[ -~]{0,64}",
        ts in 1_000_000_000i64..4_000_000_000,
        nonce in "msg_[A-Za-z0-9]{8,24}",
        index in any::<usize>(),
        with in any::<u8>(),
        skew in 1i64..300,
    ) {
        let creds: Map<String, Value> = [("secret".to_string(), json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))].into_iter().collect();
        let now = OffsetDateTime::from_unix_timestamp(ts).unwrap();
        let p = platform("standard-webhooks.yaml");
        let verify = p.callbacks[0].verify.as_ref().unwrap();
        let settings = Map::new();
        let env = RunEnv { credentials: &creds, settings: &settings, platform: "p", now, nonce: None };
        let good = signed("standard-webhooks.yaml", &payload, now, &nonce, &creds);
        prop_assert_eq!(verify.verify(&good, &env), Ok(()));

        // A delivery is accepted once; the same id again is a replay.
        let guard = MemoryReplayGuard::default();
        prop_assert_eq!(verify.verify_delivery(&good, &env, &guard), Ok(()));
        prop_assert_eq!(verify.verify_delivery(&good, &env, &guard), Err(Rejection::Replayed));

        let mut body = good.clone();
        flip(&mut body.body, index, with);
        prop_assert_eq!(verify.verify(&body, &env), Err(Rejection::Mismatch));

        let mut id = good.clone();
        flip_text(header_mut(&mut id, "webhook-id"), index, with);
        prop_assert_eq!(verify.verify(&id, &env), Err(Rejection::Mismatch));

        let mut stamp = good.clone();
        *header_mut(&mut stamp, "webhook-timestamp") = (ts + skew).to_string();
        prop_assert_eq!(verify.verify(&stamp, &env), Err(Rejection::Mismatch));

        let mut sig = good.clone();
        flip_text(header_mut(&mut sig, "webhook-signature"), index, with);
        prop_assert!(verify.verify(&sig, &env).is_err());
    }

    #[test]
    fn github_round_trip(
        payload in "[ -~]{1,64}",
        index in any::<usize>(),
        with in any::<u8>(),
    ) {
        let creds: Map<String, Value> = [("webhook_secret".to_string(), json!("It's a Secret to Everybody"))].into_iter().collect();
        let now = OffsetDateTime::now_utc();
        let p = platform("github.yaml");
        let verify = p.callbacks[0].verify.as_ref().unwrap();
        let settings = Map::new();
        let env = RunEnv { credentials: &creds, settings: &settings, platform: "p", now, nonce: None };
        let good = signed("github.yaml", &payload, now, "n", &creds);
        prop_assert_eq!(verify.verify(&good, &env), Ok(()));

        let mut body = good.clone();
        flip(&mut body.body, index, with);
        prop_assert_eq!(verify.verify(&body, &env), Err(Rejection::Mismatch));

        let mut sig = good.clone();
        flip_text(header_mut(&mut sig, "X-Hub-Signature-256"), index, with);
        prop_assert_eq!(verify.verify(&sig, &env), Err(Rejection::Mismatch));
    }
}
