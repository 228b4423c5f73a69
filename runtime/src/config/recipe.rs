//! Signing and verification recipes: a short pipeline of named steps over a request.
//!
//! A recipe computes named values in order (`steps`), each from the request's parts, the
//! credentials, the settings and the values computed before it, then places results into the
//! request (`place`) or, for an inbound delivery, compares one with the signature the sender
//! supplied (`expect`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Outbound signing: steps computed over the built request, then placed into it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRecipe {
    /// Named values computed in order. A later step or a placement refers to an earlier one as
    /// `{{NAME}}`.
    pub steps: Vec<Step>,
    /// Where computed values go in the request.
    pub place: Vec<Placement>,
}

/// Inbound verification: the same steps over the received request, then a constant-time
/// comparison of `expect` with the signature the sender supplied.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRecipe {
    /// Where the sender put its signature, and how to read it.
    pub signature: SignatureSource,
    /// Named values computed in order, as in a signing recipe.
    pub steps: Vec<Step>,
    /// Template of the value the signature must equal, for example `sha256={{sig}}`. The
    /// delivery is genuine when it equals any one of the supplied candidates.
    pub expect: String,
    /// Compare ignoring ASCII case (for hex signatures some senders upper-case). Default: false.
    #[serde(default)]
    pub ignore_case: bool,
    /// Rejects deliveries whose timestamp is too far from the gateway's clock.
    #[serde(default)]
    pub timestamp: Option<TimestampCheck>,
    /// Rejects a delivery whose key (a nonce or delivery id) was already seen.
    #[serde(default)]
    pub replay: Option<ReplayGuard>,
    /// HTTP status answered to a delivery that fails verification. Default: 401.
    #[serde(default)]
    pub reject_status: Option<u16>,
}

/// Where a delivery's signature is and how to split it into candidates.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureSource {
    /// Header holding the signature (case-insensitive).
    #[serde(default)]
    pub header: Option<String>,
    /// Or a query or form field holding it (for example `sign`).
    #[serde(default)]
    pub field: Option<String>,
    /// Or a field of a JSON body holding it, as a JSONPath ending in a field name, for example
    /// `$.sign` or `$.data.sign` (the signature inside a notification item). The field is left
    /// out of the parameters of every `canonical` step that reads the object holding it
    /// (`from: [json]` with the matching `json_path`). Default: none.
    #[serde(default)]
    pub json: Option<String>,
    /// Or a top-level element of an XML body holding it (a child of the root), for example
    /// `sign`. The element is left out of the parameters of every `canonical` step reading
    /// `from: [xml]`. Default: none.
    #[serde(default)]
    pub xml: Option<String>,
    /// Reads the value as base64 or base64url (padding optional) of a JSON object and takes
    /// the signature from a field of it (senders that put the signature, its key id and
    /// algorithm into one token), before `split` or `pairs`. The same value can give the key
    /// id: a digest step's `key_id` with the same `value` and its own `json_field`. A value
    /// that is not such an envelope, lacks the field, or holds a non-text there is refused
    /// with `reject_status`. Default: none (the value is the signature itself).
    #[serde(default)]
    pub envelope: Option<SignatureEnvelope>,
    /// Splits the value into several candidates, any of which may match (for example `" "` for
    /// a space-separated list of signatures during key rotation). A delivery with more than 16
    /// candidates is refused before any is tried. Default: none (the whole value is one candidate).
    #[serde(default)]
    pub split: Option<String>,
    /// Reads the value as `k=v` pairs (such as `t=1492774577,v1=5257a8...`). Candidates are the
    /// values of `pairs.key` (more than 16: the delivery is refused before any is tried); every
    /// pair is available to steps as `{{signature.K}}`. Default: none.
    #[serde(default)]
    pub pairs: Option<PairFormat>,
}

/// A signature token that is base64 of a JSON object holding the signature.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    /// The envelope's field holding the signature (as text); dots reach nested fields, for
    /// example `signature` or `sig.value`. No default.
    pub json_field: String,
}

/// A list of `key=value` pairs inside one header value.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairFormat {
    /// Separator between pairs. Default: `,`.
    #[serde(default)]
    pub separator: Option<String>,
    /// Separator between a key and its value. Default: `=`.
    #[serde(default)]
    pub assign: Option<String>,
    /// The key whose values are signature candidates, for example `v1`.
    pub key: String,
}

/// A timestamp tolerance window for inbound deliveries.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampCheck {
    /// Template giving the delivery's timestamp, for example `{{headers.[webhook-timestamp]}}`.
    pub value: String,
    /// Format of that timestamp: `unix_seconds`, `unix_millis`, `rfc3339` (any number of
    /// fraction digits), or a pattern such as `yyyy-MM-dd HH:mm:ss` (see `time` steps).
    /// Default: `unix_seconds`.
    #[serde(default)]
    pub format: Option<String>,
    /// UTC offset of a pattern without a zone, for example `+08:00`. Default: `+00:00`.
    #[serde(default)]
    pub offset: Option<String>,
    /// How far the timestamp may be from the gateway's clock, in the past or the future, for
    /// example `5m`. Default: `5m`.
    #[serde(default)]
    pub tolerance: Option<String>,
}

/// Remembers a key of each accepted delivery and refuses a second delivery with the same key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayGuard {
    /// Template giving the key, for example `{{headers.[webhook-id]}}` or a nonce field. It
    /// may use the recipe's steps.
    pub key: String,
    /// How long a key is remembered, for example `10m`. It should exceed the timestamp
    /// tolerance. Default: `24h`.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// One named value of a recipe.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A template rendered to text.
    Template {
        /// Name later steps use to refer to this value.
        name: String,
        /// The template, for example `{{headers.[webhook-id]}}.{{timestamp}}.{{body}}`.
        template: String,
    },
    /// A canonical string built from a set of parameters: select, filter, sort, encode, render
    /// each pair and join.
    Canonical {
        /// Name later steps use to refer to this value.
        name: String,
        /// Where the parameters come from, merged in the order listed: `query`, `form`,
        /// `headers`, `json` (the fields of a JSON object body, or of the object at
        /// `json_path`; non-text values as compact JSON), `xml` (the top-level elements of an
        /// XML body, children of its root, as their text; a repeated element gives one pair
        /// per occurrence; an element with children or attributes as compact JSON of its
        /// decoded form).
        from: Vec<ParamSource>,
        /// For `from: [json]`: JSONPath of the object whose fields are the parameters, for
        /// example `$.data` or `$.items[0]` (schemes that sign the fields of a notification
        /// item). Nothing is read when the path selects no object. Default: `$`, the
        /// top-level object.
        #[serde(default)]
        json_path: Option<String>,
        /// Parameters read from a JSON body by JSONPath, name → path, for example
        /// `{ order_id: "$.data.order.id", amount: "$.data.amount" }`: each is the first value
        /// its path selects (non-text values as compact JSON; nothing selected → no pair),
        /// added after the `from` sources. For schemes that sign chosen nested fields.
        /// Default: none.
        #[serde(default)]
        json_fields: indexmap::IndexMap<String, String>,
        /// Only these keys (compared after `lowercase_keys`). Default: all.
        #[serde(default)]
        include: Vec<String>,
        /// Keys left out, for example `sign` and `sign_type`.
        #[serde(default)]
        exclude: Vec<String>,
        /// Leave out pairs whose value is empty. Default: true.
        #[serde(default)]
        skip_empty: Option<bool>,
        /// Lower-case the keys (header names). Default: false.
        #[serde(default)]
        lowercase_keys: bool,
        /// Trim values and collapse inner runs of whitespace to one space. Default: false.
        #[serde(default)]
        trim_values: bool,
        /// Characters replaced in keys and values before they are encoded and sorted (after
        /// `include`/`exclude`, which see the names as sent): text → replacement, applied in
        /// one pass, longest match first, so replacements are never replaced again. For
        /// schemes that escape `\` and `:` before joining: `{ "\\": "\\\\", ":": "\\:" }`.
        /// Default: none.
        #[serde(default)]
        escape: indexmap::IndexMap<String, String>,
        /// Percent-encoding applied to keys and values before sorting. Default: `none`.
        #[serde(default)]
        encode: Option<UrlEncoding>,
        /// Order of the pairs. Default: `key`.
        #[serde(default)]
        sort: Option<SortOrder>,
        /// How repeated keys are rendered. Default: `repeat` (one pair per value).
        #[serde(default)]
        repeated: Option<Repeated>,
        /// Separator joining the values of a repeated key when `repeated` is `join`.
        /// Default: `,`.
        #[serde(default)]
        repeated_separator: Option<String>,
        /// How one pair is written: `{key}` and `{value}` are replaced. Default:
        /// `{key}={value}`. Use `{key}{value}` for `kv` concatenation.
        #[serde(default)]
        pair: Option<String>,
        /// Separator between pairs. Default: `&`; use `""` for none.
        #[serde(default)]
        separator: Option<String>,
    },
    /// A digest, HMAC or RSA signature of an input.
    Digest {
        /// Name later steps use to refer to this value.
        name: String,
        /// The algorithm.
        alg: DigestAlg,
        /// Template of the signed bytes. A template that is exactly one reference, such as
        /// `{{body}}` or `{{k_region}}`, passes that value's exact bytes.
        input: String,
        /// Template of the key, for HMAC and RSA algorithms. A template that is exactly one
        /// reference passes that value's bytes, which lets a binary step be the next step's key
        /// (derived-key chains). RSA keys are PEM (PKCS#1 or PKCS#8 private, SPKI or PKCS#1
        /// public) or the same DER as bare base64 without the PEM armour. Ed25519 and P-256
        /// keys are PEM, bare base64 DER (PKCS#8 private, SPKI public) or the raw key (Ed25519:
        /// the 32-byte public key or seed, or the 64-byte seed and public key; P-256: the SEC1
        /// point), in base64 or as bytes after `key_decode`. With `key_id`, a single reference
        /// to a map of key id → key instead. No default.
        #[serde(default)]
        key: Option<String>,
        /// Chooses the key by an id the delivery carries (key rotation, several senders):
        /// `key` is then a single reference, such as `{{settings.webhook_keys}}`, to a JSON
        /// object (its text) mapping key ids to keys. Default: none (`key` is the key itself).
        #[serde(default)]
        key_id: Option<KeyIdSource>,
        /// Prefix removed from the key text before decoding, for example `whsec_`.
        #[serde(default)]
        key_strip_prefix: Option<String>,
        /// How the key text becomes key bytes. Default: `utf8`.
        #[serde(default)]
        key_decode: Option<KeyDecode>,
        /// How the result is written. `raw` keeps bytes, usable only as a whole-template
        /// reference (a key or an input of a later digest). For a signature checked with a
        /// public key, how the supplied signature is decoded. Default: `hex` (`base64` for
        /// `rsa-sha256`, `ed25519` and the `ecdsa-*` algorithms).
        #[serde(default)]
        encode: Option<Encoding>,
    },
    /// The request's clock formatted as text.
    Time {
        /// Name later steps use to refer to this value.
        name: String,
        /// `unix_seconds`, `unix_millis`, `rfc3339` (whole seconds, `Z` in UTC; read with any
        /// number of fraction digits), or a pattern of `yyyy`, `MM`, `dd`, `HH`, `mm`, `ss`,
        /// `S` to `SSSSSSSSS` (that many fraction digits: `SSS` millis), `Z` (`+0800`), `XXX`
        /// (`+08:00`) and `'quoted'` literal text, such as `yyyy-MM-dd HH:mm:ss` or
        /// `yyyyMMdd'T'HHmmss'Z'`. No default.
        format: String,
        /// UTC offset, for example `+08:00`. Default: `+00:00`.
        #[serde(default)]
        offset: Option<String>,
    },
    /// A fresh random value (fixed in previews and tests with `--nonce`).
    Nonce {
        /// Name later steps use to refer to this value.
        name: String,
        /// Its shape. Default: `uuid`.
        #[serde(default)]
        format: Option<NonceFormat>,
    },
}

/// A source of parameters for a canonical string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    /// The query string.
    Query,
    /// The form body.
    Form,
    /// The request headers.
    Headers,
    /// The fields of a JSON object body (or of the object at the step's `json_path`).
    Json,
    /// The top-level elements of an XML body (the children of its root).
    Xml,
}

/// Percent-encoding of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UrlEncoding {
    /// Left as they are.
    None,
    /// `application/x-www-form-urlencoded`: space as `+`.
    Form,
    /// RFC 3986: only `A-Za-z0-9-_.~` kept, space as `%20`, upper-case hex.
    Rfc3986,
}

/// Order of the pairs of a canonical string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// By key, byte-wise (ASCII) order; pairs with equal keys keep their order.
    Key,
    /// By key, then by value.
    KeyValue,
    /// As they appear in the request.
    None,
}

/// How a key that appears several times is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Repeated {
    /// One pair per value.
    Repeat,
    /// One pair whose value joins all values with `repeated_separator`.
    Join,
}

/// A digest or signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DigestAlg {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// HMAC with MD5.
    HmacMd5,
    /// HMAC with SHA-1.
    HmacSha1,
    /// HMAC with SHA-256.
    HmacSha256,
    /// HMAC with SHA-512.
    HmacSha512,
    /// RSA PKCS#1 v1.5 signature over SHA-256 with a private key (signing) or public key
    /// (verification).
    RsaSha256,
    /// Ed25519 (RFC 8032) signature with a private key (signing) or public key (verification).
    Ed25519,
    /// ECDSA over P-256 with SHA-256, verification only (public key). The signature may be
    /// DER (as OpenSSL and Java write it) or the 64 bytes of `r` and `s` (as JOSE `ES256` and
    /// WebCrypto write it); both are accepted.
    EcdsaP256Sha256,
    /// ECDSA over P-256 with SHA-1, verification only, signatures as for `ecdsa-p256-sha256`.
    EcdsaP256Sha1,
}

/// Where a delivery carries the id of the key that signed it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIdSource {
    /// Template giving the key id, or the envelope holding it, for example
    /// `{{headers.[x-key-id]}}`.
    pub value: String,
    /// Reads `value` as base64 or base64url (padding optional) of a JSON object and takes
    /// this field of it as the key id; dots reach nested fields, for example `kid` or
    /// `header.kid`. Default: none (`value` is the key id itself).
    #[serde(default)]
    pub json_field: Option<String>,
}

/// How key text becomes key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyDecode {
    /// The UTF-8 bytes of the text.
    Utf8,
    /// Hex-decoded.
    Hex,
    /// Standard base64-decoded (padding optional).
    Base64,
    /// URL-safe base64-decoded (padding optional).
    Base64url,
}

/// How bytes are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Lower-case hex.
    Hex,
    /// Upper-case hex.
    HexUpper,
    /// Standard base64 with padding.
    Base64,
    /// URL-safe base64 without padding.
    Base64url,
    /// Kept as bytes (for keys of a derived-key chain).
    Raw,
}

/// The shape of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NonceFormat {
    /// A random UUID v4, hyphenated.
    Uuid,
    /// A random UUID v4 without hyphens: 32 lower-case hex digits (122 random bits).
    Hex,
    /// 16 random letters and digits.
    Alnum,
}

/// Where a computed value goes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The part of the request it goes into.
    pub to: PlaceTarget,
    /// Field, header or element name.
    pub name: String,
    /// Template of the value, for example `{{sig}}` or `t={{ts}},v1={{sig}}`.
    pub value: String,
}

/// A part of a request that receives a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlaceTarget {
    /// A query-string parameter.
    Query,
    /// A form field.
    Form,
    /// A header.
    Header,
    /// A top-level element of an XML request body (a child of its root), added as the root's
    /// last child, or replacing the text of the first child of that name; the value is
    /// escaped. The request must have an XML body (`xml` or `body: { format: xml }`).
    Xml,
}
