//! Fuzz target: campaign contact uploads (`sb_dialer::api::intake`): CSV read as it
//! streams in, and the JSON `{"contacts": [...]}` body.
//!
//! Consumes arbitrary bytes as an upload body; checks that reading never panics, that the
//! CSV result does not depend on how the body arrives (whole, or in reads of a few bytes),
//! that every accepted contact is a distinct E.164 number whose id is its digits, and that
//! the stored payload round-trips through its JSON. State: none.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sb_dialer::api::error::parse_json;
use sb_dialer::api::intake::{Intake, read_csv};
use sb_dialer::api::model::{ContactsUpload, UploadReport};
use sb_runtime::redis::campaigns::{ContactPayload, NewContact};

fuzz_target!(|data: &[u8]| {
    let (whole, report) = csv(data, data.len().max(1));
    let (trickled, trickled_report) = csv(data, 3);
    assert_eq!(whole, trickled, "same contacts however the body arrives");
    assert_eq!(report, trickled_report);
    check(whole.as_deref().unwrap_or_default());

    if let Ok(upload) = parse_json::<ContactsUpload>(data) {
        let mut intake = Intake::new(0);
        let mut contacts = Vec::new();
        for (i, contact) in upload.contacts.into_iter().enumerate() {
            contacts.extend(
                intake
                    .row(i as u64 + 1, &contact.phone, contact.vars)
                    .into_iter()
                    .flatten(),
            );
        }
        contacts.extend(intake.take());
        assert_eq!(contacts.len() as u64, intake.accepted);
        check(&contacts);
    }
});

/// The contacts and the report of a CSV body read `step` bytes at a time; `None`
/// contacts when the upload is refused.
fn csv(data: &[u8], step: usize) -> (Option<Vec<NewContact>>, UploadReport) {
    let mut intake = Intake::new(0);
    let mut contacts = Vec::new();
    let reader = Trickle { data, step };
    let result = read_csv(reader, &mut intake, |batch| {
        contacts.extend(batch);
        true
    });
    contacts.extend(intake.take());
    let report = intake.report.clone();
    match result {
        Ok(()) => {
            assert_eq!(contacts.len() as u64, intake.accepted);
            (Some(contacts), report)
        }
        Err(_) => (None, report),
    }
}

fn check(contacts: &[NewContact]) {
    let mut seen = std::collections::HashSet::new();
    for contact in contacts {
        let digits = contact
            .payload
            .phone
            .strip_prefix('+')
            .expect("E.164 starts with +");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(contact.id.as_str(), digits);
        assert!(seen.insert(digits.to_owned()), "{digits} accepted twice");
        let json = serde_json::to_string(&contact.payload).expect("a payload serialises");
        let back: ContactPayload = serde_json::from_str(&json).expect("a payload parses");
        assert_eq!(back, contact.payload);
    }
}

/// A body that arrives `step` bytes per read, as the upload route's channel reader does.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
