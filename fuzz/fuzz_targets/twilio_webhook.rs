//! Fuzz target: Twilio's webhook bodies (`sb_twilio::form`, `status`, `amd`) and the
//! `X-Twilio-Signature` check (`sb_twilio::signature`), plus the REST forms the stand-in
//! reads.
//!
//! Consumes arbitrary bytes as `URL \n signature \n form body`; checks that parsing the
//! form and every typed webhook never panics, that validating any signature over any URL
//! never panics, and that a signature made for a URL and parameters always validates
//! (form, WebSocket upgrade and JSON-body variants). State: none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sb_twilio::form::parse_form;
use sb_twilio::signature::{body_sha256, sign_url, websocket_url};
use sb_twilio::{
    AmdCallback, CreateCall, IncomingCall, ListCalls, RequestValidator, StatusCallback, UpdateCall,
};

const TOKEN: &str = "12345";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    let Ok(params) = parse_form(body) else {
        return;
    };
    let _ = IncomingCall::from_params(params.clone());
    let _ = StatusCallback::from_params(params.clone());
    let _ = AmdCallback::from_params(params.clone());
    let _ = CreateCall::from_params(&params);
    let _ = UpdateCall::from_params(&params);
    let _ = ListCalls::from_query(&String::from_utf8_lossy(body));

    let validator = RequestValidator::new(TOKEN);
    let form = validator.validate(&url, &params, &signature);
    let _ = validator.validate_websocket(&url, &signature);
    let _ = validator.validate_json(&url, body, &signature);
    if form.is_err_and(|e| e.kind() == "invalid_url") {
        return;
    }
    // What Twilio would send for this URL is accepted.
    let signed = validator.sign(&url, &params);
    assert!(validator.validate(&url, &params, &signed).is_ok());
    let upgrade = sign_url(TOKEN, &websocket_url(&url));
    assert!(validator.validate_websocket(&url, &upgrade).is_ok());
    let json_url = format!("{url}&bodySHA256={}", body_sha256(body));
    if url.contains('?') && !url.contains('#') && !url.contains("bodySHA256") {
        let json_signed = sign_url(TOKEN, &json_url);
        assert!(
            validator
                .validate_json(&json_url, body, &json_signed)
                .is_ok()
        );
    }
});
