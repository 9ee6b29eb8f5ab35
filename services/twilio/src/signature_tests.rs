//! Table-driven tests for `signature.rs`: every vector of PROTOCOLS §2.5 (from the official
//! twilio-python and twilio-node test suites) and the validator behaviours listed under it.
//! Consumes nothing but constants; no state.

use super::*;

const TOKEN: &str = "12345";

fn common() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
}

const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
const JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
const EMPTY_HASH: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Vectors 1–7: the signature computed over the exact URL matches the SDKs' expected value,
/// and the validator accepts it for that URL.
#[test]
fn form_vectors_sign_and_validate() {
    let multi = vec![
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ];
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            common(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            common(),
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
        ),
        (
            "http://mycompany.com:80/myapp.php?foo=1&bar=2",
            common(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        ),
        (
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            common(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            multi,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
        ),
        (
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            common(),
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
        ),
        (
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
            common(),
            "2YRLlVAflCqxaNicjMpJcSTgzSs=",
        ),
    ];
    let validator = RequestValidator::new(TOKEN);
    for (i, (url, params, expected)) in cases.iter().enumerate() {
        assert_eq!(sign(TOKEN, url, params), *expected, "vector {}", i + 1);
        assert_eq!(
            validator.validate(url, params, expected),
            Ok(()),
            "vector {}",
            i + 1
        );
        assert_eq!(
            validator.validate(url, params, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(SignatureError::Mismatch),
            "vector {} with a wrong signature",
            i + 1
        );
    }
}

/// The exact string of vector 1, and vector 5's multi-value tail (sorted, de-duplicated).
#[test]
fn string_to_sign_is_exact() {
    assert_eq!(
        string_to_sign("https://mycompany.com/myapp.php?foo=1&bar=2", &common()),
        "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309\
         Digits1234From+14158675309To+18005551212"
    );
    let multi = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ];
    assert!(string_to_sign("u", &multi).ends_with("Digits1234Digits5678SidCA123SidAccountAC123"));
}

/// The docs' worked example.
#[test]
fn docs_example() {
    let params = [
        ("Digits", "1234"),
        ("To", "+18005551212"),
        ("From", "+14158675310"),
        ("Caller", "+14158675310"),
        ("CallSid", "CA1234567890ABCDE"),
    ];
    assert_eq!(
        sign(TOKEN, "https://example.com/myapp.php?foo=1&bar=2", &params),
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    );
}

/// Port behaviours: a non-standard https port is stripped (validates against vector 1), a
/// portless URL also accepts the with-port signatures (vectors 2 and 3), http keeps 1234.
#[test]
fn port_variants() {
    let validator = RequestValidator::new(TOKEN);
    let cases = [
        (
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
            true,
        ),
        (
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            true,
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            true,
        ),
        (
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            false,
        ),
    ];
    for (url, signature, ok) in cases {
        assert_eq!(
            validator.validate(url, &common(), signature).is_ok(),
            ok,
            "{url} {signature}"
        );
    }
}

/// Userinfo both ways: credentials in the received URL still validate a signature computed
/// without them (the docs' statement), and a fragment is never part of the signed URL.
#[test]
fn userinfo_and_fragment() {
    let validator = RequestValidator::new(TOKEN);
    let url = "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2";
    assert!(
        validator
            .validate(url, &common(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            .is_ok()
    );
    let with_fragment = "https://mycompany.com/myapp.php?foo=1&bar=2#rc=2&ct=1000";
    assert!(
        validator
            .validate(with_fragment, &common(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            .is_ok()
    );
    assert_eq!(
        sign(TOKEN, with_fragment, &common()),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}

/// Vectors 8–10: JSON bodies are signed over the URL with `bodySHA256`, and the body hash
/// is checked; vector 10 only matches the with-port variant.
#[test]
fn json_vectors() {
    let validator = RequestValidator::new(TOKEN);
    assert_eq!(body_sha256(JSON_BODY.as_bytes()), JSON_HASH);
    assert_eq!(body_sha256(b"{}"), EMPTY_HASH);
    let cases = [
        (
            format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={JSON_HASH}"),
            JSON_BODY,
            "a9nBmqA0ju/hNViExpshrM61xv4=",
        ),
        (
            format!("https://mycompany.com/myapp.php?bodySHA256={JSON_HASH}"),
            JSON_BODY,
            "y77kIzt2vzLz71DgmJGsen2scGs=",
        ),
        (
            format!("https://mycompany.com:443/myapp.php?foo=1&bar=2&bodySHA256={EMPTY_HASH}"),
            "{}",
            "Ldidvp12m26NI7eqEvxnEpkd9Hc=",
        ),
    ];
    for (url, body, signature) in &cases {
        assert_eq!(sign_url(TOKEN, url), *signature, "{url}");
        assert_eq!(
            validator.validate_json(url, body.as_bytes(), signature),
            Ok(()),
            "{url}"
        );
    }
    let portless = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={EMPTY_HASH}");
    assert_ne!(sign_url(TOKEN, &portless), "Ldidvp12m26NI7eqEvxnEpkd9Hc=");
    assert_eq!(
        validator.validate_json(&portless, b"{}", "Ldidvp12m26NI7eqEvxnEpkd9Hc="),
        Ok(())
    );
    assert_eq!(
        validator.validate_json(&cases[0].0, b"{\"tampered\": 1}", cases[0].2),
        Err(SignatureError::BodyHashMismatch)
    );
    assert_eq!(
        validator.validate_json("https://mycompany.com/myapp.php", b"{}", "x"),
        Err(SignatureError::MissingBodyHash)
    );
}

/// WebSocket upgrades are signed over `wss://` with no params; an `https://` public URL
/// is converted, a trailing slash and the default port are tolerated, `https` is not.
#[test]
fn websocket_upgrade() {
    let validator = RequestValidator::new(TOKEN);
    let signature = sign_url(TOKEN, "wss://agent.example.com/twilio/media");
    for url in [
        "wss://agent.example.com/twilio/media",
        "https://agent.example.com/twilio/media",
        "wss://agent.example.com/twilio/media/",
        "wss://agent.example.com:443/twilio/media",
    ] {
        assert_eq!(
            validator.validate_websocket(url, &signature),
            Ok(()),
            "{url}"
        );
    }
    let https_signature = sign_url(TOKEN, "https://agent.example.com/twilio/media");
    assert!(
        validator
            .validate_websocket("https://agent.example.com/twilio/media", &https_signature)
            .is_err()
    );
    assert_eq!(
        websocket_url("http://127.0.0.1:8080/x"),
        "ws://127.0.0.1:8080/x"
    );
}

/// Malformed input never panics and is reported as such.
#[test]
fn bad_input_is_an_error() {
    let validator = RequestValidator::new(TOKEN);
    let empty: &[(&str, &str)] = &[];
    assert!(matches!(
        validator.validate("not a url", empty, "x"),
        Err(SignatureError::InvalidUrl(_))
    ));
    assert_eq!(
        validator.validate("https://[::1]:8443/x", empty, ""),
        Err(SignatureError::Mismatch)
    );
    assert!(format!("{validator:?}").contains("redacted"));
}
