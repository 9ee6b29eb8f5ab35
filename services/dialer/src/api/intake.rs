//! Rows of a contacts upload turned into queue contacts, pure: E.164 checks, numbers
//! repeated within the upload, the rejection list, and CSV read from any `Read` as it
//! arrives (the upload route feeds it the request body chunk by chunk).
//!
//! Consumes CSV bytes or JSON items; produces batches of [`NewContact`] (id: the number
//! without its `+`, so the queue itself skips a number the campaign already has) and an
//! [`UploadReport`]. State: the upload's numbers seen so far (8 bytes each) and its report.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use sb_runtime::redis::campaigns::{ContactId, ContactPayload, NewContact};

use super::error::ApiError;
use super::model::{Rejection, UploadReport};
use crate::campaign::is_e164;

/// Contacts per `enqueue` call: the queue sends them as 8 pipelined scripts of 500.
pub const BATCH: usize = 4000;
/// Rejections listed in the answer; the rest are only counted.
pub const LISTED_REJECTIONS: usize = 1000;
/// Longest variable value kept (a template fills it into speech).
const MAX_VALUE: usize = 1000;

/// One upload in progress.
#[derive(Debug)]
pub struct Intake {
    priority: u16,
    /// Number (digits as an integer) → the line it was first seen on.
    seen: HashMap<u64, u64>,
    batch: Vec<NewContact>,
    /// Rows handed to the queue (queued or found there already).
    pub accepted: u64,
    pub report: UploadReport,
}

impl Intake {
    pub fn new(priority: u16) -> Self {
        Self {
            priority,
            seen: HashMap::new(),
            batch: Vec::with_capacity(BATCH),
            accepted: 0,
            report: UploadReport::default(),
        }
    }

    pub fn reject(&mut self, line: u64, reason: impl Into<String>) {
        self.report.rejected_total += 1;
        if self.report.rejected.len() < LISTED_REJECTIONS {
            self.report.rejected.push(Rejection {
                line,
                reason: reason.into(),
            });
        }
    }

    /// Takes a row; a full batch comes back to be enqueued.
    pub fn row(
        &mut self,
        line: u64,
        phone: &str,
        vars: BTreeMap<String, String>,
    ) -> Option<Vec<NewContact>> {
        let phone = phone.trim();
        if phone.is_empty() {
            self.reject(line, "missing phone");
            return None;
        }
        if !is_e164(phone) {
            self.reject(
                line,
                format!(
                    "{:?} is not an E.164 number (+ and 2-15 digits)",
                    clip(phone)
                ),
            );
            return None;
        }
        if let Some((name, _)) = vars.iter().find(|(_, v)| v.len() > MAX_VALUE) {
            self.reject(
                line,
                format!("variable {:?} is longer than {MAX_VALUE} bytes", clip(name)),
            );
            return None;
        }
        let digits = &phone[1..];
        // At most 15 digits: always fits.
        let number: u64 = digits.parse().unwrap_or(u64::MAX);
        if let Some(first) = self.seen.get(&number) {
            let first = *first;
            self.reject(line, format!("duplicate of line {first}"));
            return None;
        }
        self.seen.insert(number, line);
        let id = ContactId::parse(digits).expect("an E.164 number's digits are a valid contact id");
        self.accepted += 1;
        self.batch.push(NewContact {
            id,
            priority: self.priority,
            not_before_ms: 0,
            payload: ContactPayload {
                phone: phone.to_owned(),
                vars,
            },
        });
        (self.batch.len() >= BATCH).then(|| self.take())
    }

    /// The contacts not yet handed out.
    pub fn take(&mut self) -> Vec<NewContact> {
        std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH))
    }
}

fn clip(raw: &str) -> String {
    raw.chars().take(40).collect()
}

/// Reads CSV from `reader` (header row: `phone` and variable names), feeding `intake`
/// and handing each full batch to `sink` (which returns `false` to stop early). The
/// last, partial batch stays in `intake`. An I/O error of `reader` comes back as is.
pub fn read_csv<R: Read>(
    mut reader: R,
    intake: &mut Intake,
    mut sink: impl FnMut(Vec<NewContact>) -> bool,
) -> Result<(), CsvFailure> {
    // The csv reader drops a UTF-8 BOM from its first read only, and a first read that is
    // nothing but the BOM is then empty, which it takes for the end of the body: give it
    // at least 4 bytes (or the whole body) at once, however the body arrives.
    let mut head = Vec::with_capacity(4);
    reader
        .by_ref()
        .take(4)
        .read_to_end(&mut head)
        .map_err(CsvFailure::Io)?;
    let reader = std::io::Cursor::new(head).chain(reader);
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    if !csv
        .read_byte_record(&mut record)
        .map_err(CsvFailure::from_csv)?
    {
        return Err(CsvFailure::Invalid(
            "the body is empty: expected a header row with a `phone` column".into(),
        ));
    }
    let mut names = Vec::with_capacity(record.len());
    for raw in &record {
        let name = std::str::from_utf8(raw)
            .map_err(|_| CsvFailure::Invalid("the header row is not UTF-8".into()))?
            .trim()
            .trim_start_matches('\u{feff}')
            .to_owned();
        if !name.is_empty() && names.contains(&name) {
            return Err(CsvFailure::Invalid(format!(
                "column {:?} appears twice in the header row",
                clip(&name)
            )));
        }
        names.push(name);
    }
    let phone_at = names
        .iter()
        .position(|n| n.eq_ignore_ascii_case("phone"))
        .ok_or_else(|| CsvFailure::Invalid("the header row has no `phone` column".into()))?;
    while csv
        .read_byte_record(&mut record)
        .map_err(CsvFailure::from_csv)?
    {
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != names.len() {
            intake.reject(
                line,
                format!("expected {} columns, found {}", names.len(), record.len()),
            );
            continue;
        }
        let mut phone = "";
        let mut vars = BTreeMap::new();
        let mut utf8 = true;
        for (i, raw) in record.iter().enumerate() {
            let Ok(value) = std::str::from_utf8(raw) else {
                utf8 = false;
                break;
            };
            if i == phone_at {
                phone = value;
            } else if !value.is_empty() && !names[i].is_empty() {
                vars.insert(names[i].clone(), value.to_owned());
            }
        }
        if !utf8 {
            intake.reject(line, "not UTF-8");
            continue;
        }
        if let Some(batch) = intake.row(line, phone, vars)
            && !sink(batch)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Why CSV reading stopped before the end.
#[derive(Debug)]
pub enum CsvFailure {
    /// The upload is not usable CSV (no header, no `phone` column).
    Invalid(String),
    /// The body could not be read (cut off, over the limit): the pump knows why.
    Io(std::io::Error),
}

impl CsvFailure {
    fn from_csv(e: csv::Error) -> Self {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Self::Io(io),
            other => Self::Invalid(format!("unreadable CSV: {other:?}")),
        }
    }
}

impl From<CsvFailure> for ApiError {
    fn from(f: CsvFailure) -> Self {
        match f {
            CsvFailure::Invalid(message) => ApiError::InvalidCsv(message),
            CsvFailure::Io(e) => ApiError::InvalidCsv(format!("cannot read the body: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(csv: &str) -> (Result<(), CsvFailure>, Intake, Vec<NewContact>) {
        let mut intake = Intake::new(4);
        let mut out = Vec::new();
        let result = read_csv(csv.as_bytes(), &mut intake, |b| {
            out.extend(b);
            true
        });
        out.extend(intake.take());
        (result, intake, out)
    }

    /// Each kind of bad row is listed with its line and reason; good rows become
    /// contacts with their variables, the number without `+` as id, the campaign's priority.
    #[test]
    fn bad_rows_are_listed_by_line_and_good_ones_kept() {
        let (result, intake, out) = run(
            "phone,name,ref\n+14155550100,Ann,r1\n4155550101,Bob,r2\n,Cy,r3\n\
             +14155550100,Ann again,r4\n+14155550102,Dee\n\"+14155550103\",\"Eve, Jr\",\n",
        );
        assert!(result.is_ok());
        let lines: Vec<(u64, &str)> = intake
            .report
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (
                    3,
                    "\"4155550101\" is not an E.164 number (+ and 2-15 digits)"
                ),
                (4, "missing phone"),
                (5, "duplicate of line 2"),
                (6, "expected 3 columns, found 2"),
            ]
        );
        assert_eq!(intake.report.rejected_total, 4);
        assert_eq!(intake.accepted, 2);
        let ids: Vec<&str> = out.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["14155550100", "14155550103"]);
        assert_eq!(
            out[1].payload.vars.get("name").map(String::as_str),
            Some("Eve, Jr")
        );
        assert!(
            !out[1].payload.vars.contains_key("ref"),
            "empty values are not variables"
        );
        assert!(out.iter().all(|c| c.priority == 4 && c.not_before_ms == 0));
    }

    /// A header without `phone`, an empty body or a repeated column refuse the upload.
    #[test]
    fn unusable_headers_refuse_the_upload() {
        for body in ["name,ref\nAnn,1\n", "", "phone,a,a\n+14155550100,1,2\n"] {
            assert!(
                matches!(run(body).0, Err(CsvFailure::Invalid(_))),
                "{body:?}"
            );
        }
    }

    /// A body whose first read is only its UTF-8 BOM (a client that sends it on its own)
    /// reads like the same body in one piece, not as an empty upload (found by fuzzing).
    #[test]
    fn a_bom_in_a_read_of_its_own_is_not_the_end_of_the_body() {
        struct Reads(Vec<&'static [u8]>);
        impl Read for Reads {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some(next) = self.0.first_mut() else {
                    return Ok(0);
                };
                let n = next.len().min(buf.len());
                buf[..n].copy_from_slice(&next[..n]);
                *next = &next[n..];
                if next.is_empty() {
                    self.0.remove(0);
                }
                Ok(n)
            }
        }
        let cases: [Vec<&'static [u8]>; 3] = [
            vec![b"\xef\xbb\xbf", b"Phone,name\r\n+442071838750,Ann\r\n"],
            vec![b"\xef", b"\xbb\xbf", b"phone,name\n+442071838750,Ann\n"],
            vec![b"\xef\xbb\xbfphone,name\n+442071838750,Ann\n"],
        ];
        for reads in cases {
            let mut intake = Intake::new(0);
            read_csv(Reads(reads.clone()), &mut intake, |_| true)
                .unwrap_or_else(|e| panic!("{reads:?}: {e:?}"));
            let out = intake.take();
            assert_eq!(out.len(), 1, "{reads:?}");
            assert_eq!(
                out[0].payload.vars.get("name").map(String::as_str),
                Some("Ann")
            );
        }
        let mut intake = Intake::new(0);
        let only_bom = read_csv(Reads(vec![b"\xef\xbb\xbf"]), &mut intake, |_| true);
        assert!(
            matches!(only_bom, Err(CsvFailure::Invalid(_))),
            "{only_bom:?}"
        );
    }

    /// Full batches go out as they fill; only the first 1,000 rejections are listed.
    #[test]
    fn batches_flow_and_rejections_are_capped() {
        let mut body = String::from("phone\n");
        for i in 0..(BATCH + 10) {
            body.push_str(&format!("+1415{i:07}\n"));
        }
        for _ in 0..1500 {
            body.push_str("nope\n");
        }
        let mut intake = Intake::new(0);
        let mut sizes = Vec::new();
        read_csv(body.as_bytes(), &mut intake, |b| {
            sizes.push(b.len());
            true
        })
        .unwrap();
        assert_eq!(sizes, [BATCH]);
        assert_eq!(intake.take().len(), 10);
        assert_eq!(intake.report.rejected.len(), LISTED_REJECTIONS);
        assert_eq!(intake.report.rejected_total, 1500);
    }
}
