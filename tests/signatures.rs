//! Public-key signatures made by implementations independent of entrepot (the OpenSSL command
//! line and Python's `cryptography`, recorded with their commands in
//! `tests/vectors/openssl-asymmetric.json`), checked through the YAML recipes under
//! `tests/vectors/`: Ed25519 (verification and signing), ECDSA P-256 with SHA-256 and SHA-1
//! (DER and raw `r || s` signatures), keys chosen by a key id the delivery carries (a plain
//! header or a base64 JSON envelope), signature tokens that are themselves a base64 JSON
//! envelope holding the signature and the key id, and RSA keys given as bare base64.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use entrepot::recipe::{Parts, Rejection, RunEnv};

use crate::support::root;
use crate::vectors::platform;

fn vectors() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/vectors/openssl-asymmetric.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn file(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/vectors").join(name)).unwrap()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn map(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn env<'a>(credentials: &'a Map<String, Value>, settings: &'a Map<String, Value>) -> RunEnv<'a> {
    RunEnv {
        credentials,
        settings,
        platform: "test",
        now: OffsetDateTime::now_utc(),
        nonce: None,
    }
}

fn delivery(headers: &[(&str, &str)], body: &str) -> Parts {
    Parts {
        method: "POST".into(),
        url: "http://127.0.0.1/hook".into(),
        path: "/hook".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        ..Parts::default()
    }
}

/// The Ed25519 message is `id.timestamp.body`: its parts as the delivery's headers and body.
fn ed25519_parts(signature_header: &str) -> Parts {
    let v = vectors();
    let message = text(&v["ed25519"]["message"]);
    let mut it = message.splitn(3, '.');
    let (id, ts, body) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    delivery(
        &[
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", signature_header),
        ],
        body,
    )
}

#[test]
fn ed25519_signature_made_by_openssl_verifies() {
    let v = vectors();
    let sig = text(&v["ed25519"]["signature_base64"]);
    let p = platform("ed25519.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let creds = Map::new();
    // The public key as senders publish it (raw 32 bytes in base64), as PEM, and as the bare
    // base64 of the PEM's DER body.
    let pem = file("ed25519-test-key.pub.pem");
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for key in [text(&v["ed25519"]["public_key_raw_base64"]), &pem, &bare] {
        let settings = map(&[("sender_public_key", key)]);
        let e = env(&creds, &settings);
        let good = ed25519_parts(&format!("v1,bogus v1a,{sig}"));
        verify.verify(&good, &e).unwrap();
        let mut tampered = good.clone();
        tampered.body.push(b' ');
        assert_eq!(verify.verify(&tampered, &e), Err(Rejection::Mismatch));
        let only_other = ed25519_parts(&format!("v1,{sig}"));
        assert!(verify.verify(&only_other, &e).is_err());
    }
    // The key in hex (as chat platforms publish it) is read with `key_decode: hex`: here the
    // hex text is not base64 of 32 bytes, so it is refused with a reason, never accepted.
    let settings = map(&[(
        "sender_public_key",
        text(&v["ed25519"]["public_key_raw_hex"]),
    )]);
    let e = env(&creds, &settings);
    assert!(matches!(
        verify.verify(&ed25519_parts(&format!("v1a,{sig}")), &e),
        Err(Rejection::Recipe(_))
    ));
}

#[test]
fn ed25519_signing_reproduces_openssl() {
    // Ed25519 is deterministic: the gateway's signature must equal OpenSSL's byte for byte.
    let v = vectors();
    let sig = text(&v["ed25519"]["signature_base64"]);
    let p = platform("ed25519.yaml");
    let sign = p.operations["product.get"].request.sign.as_ref().unwrap();
    let pem = file("ed25519-test-key.pem");
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let settings = Map::new();
    for key in [pem.as_str(), &bare] {
        let creds = map(&[("private_key", key)]);
        let (placed, trace) = sign
            .run(&ed25519_parts(""), &env(&creds, &settings))
            .unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].1, "webhook-signature");
        assert_eq!(placed[0].2, format!("v1a,{sig}"));
        assert!(
            !format!("{trace:?}").contains(&bare),
            "the private key must not show in the trace"
        );
    }
    let creds = map(&[("private_key", "not a key")]);
    let err = sign
        .run(&ed25519_parts(""), &env(&creds, &settings))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Ed25519 private key"), "{err}");
}

fn ecdsa_creds() -> Map<String, Value> {
    let keys = json!({
        "k-old": file("p256-other.pub.pem"),
        "k-2026": file("p256-test-key.pub.pem"),
    });
    map(&[("sender_keys", &keys.to_string())])
}

#[test]
fn ecdsa_p256_signatures_by_openssl_and_python_verify_with_the_key_named_in_an_envelope() {
    let v = vectors();
    let ec = &v["ecdsa_p256"];
    let body = text(&ec["message"]);
    let envelope = text(&v["key_id_envelope"]["header_value"]);
    let p = platform("ecdsa.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let creds = ecdsa_creds();
    let settings = Map::new();
    let e = env(&creds, &settings);
    // OpenSSL's DER signature and Python's raw r||s signature, both over SHA-256.
    for sig in [
        text(&ec["sha256_der_base64"]),
        text(&ec["sha256_raw_base64"]),
    ] {
        let good = delivery(
            &[("X-Signature", sig), ("X-Signature-Envelope", envelope)],
            body,
        );
        verify.verify(&good, &e).unwrap();
        let tampered = delivery(
            &[("X-Signature", sig), ("X-Signature-Envelope", envelope)],
            &body.replace('3', "4"),
        );
        assert_eq!(verify.verify(&tampered, &e), Err(Rejection::Mismatch));
        // The envelope naming the other key: the signature does not verify with it.
        let other = base64_of(r#"{"kid":"k-old","alg":"ES256"}"#);
        let wrong_key = delivery(
            &[("X-Signature", sig), ("X-Signature-Envelope", &other)],
            body,
        );
        assert_eq!(verify.verify(&wrong_key, &e), Err(Rejection::Mismatch));
        // An unknown key id, or an envelope without one, is the delivery's fault, not the
        // gateway's: refused with `reject_status` and a reason (a recipe error would answer
        // 503 and invite the sender to retry).
        let unknown = base64_of(r#"{"kid":"k-1999"}"#);
        let unknown = delivery(
            &[("X-Signature", sig), ("X-Signature-Envelope", &unknown)],
            body,
        );
        let err = verify.verify(&unknown, &e).unwrap_err();
        assert!(matches!(err, Rejection::UnknownKey(_)), "{err:?}");
        assert!(err.to_string().contains("no key with id 'k-1999'"), "{err}");
        let no_kid = base64_of(r#"{"alg":"ES256"}"#);
        let not_json = base64_of("not json");
        for envelope in [no_kid.as_str(), "not base64!", &not_json, ""] {
            let d = delivery(
                &[("X-Signature", sig), ("X-Signature-Envelope", envelope)],
                body,
            );
            assert!(
                matches!(verify.verify(&d, &e), Err(Rejection::UnknownKey(_))),
                "{envelope}"
            );
        }
        // A key map that is not JSON is the gateway's own setup problem.
        let broken = map(&[("sender_keys", "k-2026: MFkw")]);
        let good = delivery(
            &[("X-Signature", sig), ("X-Signature-Envelope", envelope)],
            body,
        );
        assert!(matches!(
            verify.verify(&good, &env(&broken, &settings)),
            Err(Rejection::Recipe(_))
        ));
    }
    // A SHA-1 signature is not a SHA-256 one.
    let sha1 = delivery(
        &[
            ("X-Signature", text(&ec["sha1_der_base64"])),
            ("X-Signature-Envelope", envelope),
        ],
        body,
    );
    assert_eq!(verify.verify(&sha1, &e), Err(Rejection::Mismatch));
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn ecdsa_p256_sha1_signatures_verify_with_the_key_named_in_a_header() {
    let v = vectors();
    let ec = &v["ecdsa_p256"];
    let body = text(&ec["message"]);
    let p = platform("ecdsa.yaml");
    let verify = p.callbacks[1].verify.as_ref().unwrap();
    let creds = ecdsa_creds();
    let settings = Map::new();
    let e = env(&creds, &settings);
    for sig in [text(&ec["sha1_der_base64"]), text(&ec["sha1_raw_base64"])] {
        verify
            .verify(
                &delivery(&[("X-Signature", sig), ("X-Key-Id", "k-2026")], body),
                &e,
            )
            .unwrap();
        assert_eq!(
            verify.verify(
                &delivery(&[("X-Signature", sig), ("X-Key-Id", "k-old")], body),
                &e
            ),
            Err(Rejection::Mismatch)
        );
    }
    let sha256 = delivery(
        &[
            ("X-Signature", text(&ec["sha256_der_base64"])),
            ("X-Key-Id", "k-2026"),
        ],
        body,
    );
    assert_eq!(verify.verify(&sha256, &e), Err(Rejection::Mismatch));
}

#[test]
fn rsa_keys_in_bare_base64_reproduce_the_pem_vector() {
    let o: Value = serde_json::from_str(&file("openssl.json")).unwrap();
    let message = text(&o["rsa_sha256"]["message"]);
    let expected = text(&o["rsa_sha256"]["signature_base64"]);
    let bare = &vectors()["rsa_bare_base64"];
    let form: Vec<(String, String)> = message
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let request = Parts {
        form: form.clone(),
        ..Parts::default()
    };
    let p = platform("rsa.yaml");
    let sign = p.operations["order.create"].request.sign.as_ref().unwrap();
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let settings = Map::new();
    for (private, public) in [
        (text(&bare["pkcs8_private"]), text(&bare["spki"])),
        (text(&bare["pkcs1_private"]), text(&bare["pkcs1_public"])),
    ] {
        // Also wrapped at 64 columns, as some consoles show them.
        let wrapped: String = public
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        for public in [public, wrapped.as_str()] {
            let creds = map(&[("private_key", private), ("platform_public_key", public)]);
            let e = env(&creds, &settings);
            let (placed, _) = sign.run(&request, &e).unwrap();
            assert_eq!(placed[0].2, expected);
            let mut signed = request.clone();
            signed.form.push(("sign".into(), expected.into()));
            verify.verify(&signed, &e).unwrap();
            signed.form[0].1.push(' ');
            assert_eq!(verify.verify(&signed, &e), Err(Rejection::Mismatch));
        }
    }
}

/// Through the HTTP server: a genuine ECDSA delivery is accepted, one naming an unknown key id
/// is refused with the route's `reject_status` (401), not 503.
#[tokio::test]
async fn key_id_rejections_reach_the_sender_as_401() {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use entrepot::credentials::CredentialSets;
    use entrepot::engine::Engine;
    use entrepot::server::AppState;

    let compiled =
        entrepot::compile::compile_files(&[root().join("tests/vectors/ecdsa.yaml")], &|_| None);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert("vector_ecdsa".into(), ecdsa_creds());
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        targets: Arc::new(Vec::new()),
        admin_token: None,
        notify: None,
        reloader: None,
        trust_forwarded_headers: false,
        orders: None,
        sync: None,
        metrics: Default::default(),
        monitor: None,
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let v = vectors();
    let body = text(&v["ecdsa_p256"]["message"]).to_string();
    let sig = text(&v["ecdsa_p256"]["sha256_der_base64"]);
    let http = reqwest::Client::new();
    let post = |envelope: String| {
        http.post(format!("http://{addr}/callbacks/vector-ecdsa/sha256"))
            .header("content-type", "application/json")
            .header("x-signature", sig)
            .header("x-signature-envelope", envelope)
            .body(body.clone())
            .send()
    };
    let unknown = post(base64_of(r#"{"kid":"k-1999"}"#)).await.unwrap();
    assert_eq!(unknown.status(), 401);
    let genuine = post(text(&v["key_id_envelope"]["header_value"]).to_string())
        .await
        .unwrap();
    assert!(genuine.status().is_success(), "{}", genuine.status());
}

fn envelope_vectors() -> Value {
    let text = file("signature-envelope.json");
    serde_json::from_str(&text).unwrap()
}

/// A signature token that is base64 (or base64url) of a JSON object holding the signature and
/// the key id, packed by Python around OpenSSL's ECDSA signature (`signature-envelope.json`):
/// the signature is read from the envelope's field (top-level or dotted), the key is chosen by
/// the same envelope's `kid`.
#[test]
fn a_base64_envelope_signature_token_verifies_with_the_key_named_inside_it() {
    let v = envelope_vectors();
    let body = text(&v["message"]);
    let p = platform("signature-envelope.yaml");
    let creds = ecdsa_creds();
    let settings = Map::new();
    let e = env(&creds, &settings);
    for (route, kind) in [(0, "flat"), (1, "nested")] {
        let verify = p.callbacks[route].verify.as_ref().unwrap();
        let token = text(&v[kind]["header_value"]);
        verify
            .verify(&delivery(&[("X-Signature", token)], body), &e)
            .unwrap_or_else(|r| panic!("{kind}: {r}"));
        let tampered = delivery(&[("X-Signature", token)], &body.replace('3', "4"));
        assert_eq!(
            verify.verify(&tampered, &e),
            Err(Rejection::Mismatch),
            "{kind}"
        );
    }
    // The same signature under the other key's id does not verify.
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let sig = text(&v["signature"]);
    let other = base64_of(&json!({ "kid": "k-old", "signature": sig }).to_string());
    assert_eq!(
        verify.verify(&delivery(&[("X-Signature", &other)], body), &e),
        Err(Rejection::Mismatch)
    );
}

/// Envelopes that are not base64 of a JSON object, lack the signature field, or hold a
/// non-text there are the delivery's fault: refused with a reason naming the envelope, never
/// a recipe failure (which the server answers 503).
#[test]
fn a_broken_signature_envelope_is_refused_with_a_reason() {
    let v = envelope_vectors();
    let body = text(&v["message"]);
    let sig = text(&v["signature"]);
    let p = platform("signature-envelope.yaml");
    let verify = p.callbacks[0].verify.as_ref().unwrap();
    let creds = ecdsa_creds();
    let settings = Map::new();
    let e = env(&creds, &settings);
    let cases = [
        ("not base64!".to_string(), "not base64"),
        (base64_of("not json"), "not base64 of a JSON object"),
        (
            base64_of(&json!([sig]).to_string()),
            "not base64 of a JSON object",
        ),
        (
            base64_of(&json!({ "kid": "k-2026", "sig": sig }).to_string()),
            "no field 'signature'",
        ),
        (
            base64_of(&json!({ "kid": "k-2026", "signature": 12 }).to_string()),
            "'signature' is not text",
        ),
        (
            base64_of(&json!({ "kid": "k-2026", "signature": { "v": sig } }).to_string()),
            "'signature' is not text",
        ),
    ];
    for (token, reason) in cases {
        let err = verify
            .verify(&delivery(&[("X-Signature", &token)], body), &e)
            .unwrap_err();
        assert!(!matches!(err, Rejection::Recipe(_)), "{token}: {err:?}");
        let message = err.to_string();
        assert!(
            message.contains("envelope") && message.contains(reason),
            "{token}: {message}"
        );
    }
}

/// Through the HTTP server: a genuine envelope delivery is accepted; a tampered body and a
/// broken envelope are answered with the route's `reject_status` (412), never 500 or 503.
#[tokio::test]
async fn signature_envelope_rejections_reach_the_sender_with_reject_status() {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use entrepot::credentials::CredentialSets;
    use entrepot::engine::Engine;
    use entrepot::server::AppState;

    let compiled = entrepot::compile::compile_files(
        &[root().join("tests/vectors/signature-envelope.yaml")],
        &|_| None,
    );
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    let dir = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(&dir).await;
    let mut creds = CredentialSets::new();
    creds.insert("vector_signature_envelope".into(), ecdsa_creds());
    let engine = Arc::new(Engine::new(store.clone(), creds, |_| None));
    let state = AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
        store: Some(store.clone()),
        engine: Some(engine),
        targets: Arc::new(Vec::new()),
        admin_token: None,
        notify: None,
        reloader: None,
        trust_forwarded_headers: false,
        orders: None,
        sync: None,
        metrics: Default::default(),
        monitor: None,
    };
    let addr = crate::support::serve_on_loopback(state).await;
    let v = envelope_vectors();
    let body = text(&v["message"]).to_string();
    let token = text(&v["flat"]["header_value"]).to_string();
    let http = reqwest::Client::new();
    let post = |token: String, body: String| {
        http.post(format!("http://{addr}/callbacks/vector-envelope/flat"))
            .header("content-type", "application/json")
            .header("x-signature", token)
            .body(body)
            .send()
    };
    let broken = post(base64_of("not json"), body.clone()).await.unwrap();
    assert_eq!(broken.status(), 412);
    let tampered = post(token.clone(), body.replace('3', "4")).await.unwrap();
    assert_eq!(tampered.status(), 412);
    let genuine = post(token, body).await.unwrap();
    assert!(genuine.status().is_success(), "{}", genuine.status());
}
