//! Time formats the platforms use, compiled once from a small pattern language:
//! `unix_seconds`, `unix_millis`, `rfc3339`, or a pattern of `yyyy`, `MM`, `dd`, `HH`, `mm`,
//! `ss`, `S` to `SSSSSSSSS` (fraction digits), `Z` (`+0800`), `XXX` (`+08:00`) and
//! `'quoted'` literal text.

use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Unix milliseconds of `t` (saturating at the ends of `i64`).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(if t.unix_timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// `t` in RFC 3339 (empty in the impossible case that it cannot be written).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix milliseconds in RFC 3339, UTC (empty when out of range).
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(rfc3339)
        .unwrap_or_default()
}

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// `yyyy`
    Year,
    /// `MM`
    Month,
    /// `dd`
    Day,
    /// `HH`
    Hour,
    /// `mm`
    Minute,
    /// `ss`
    Second,
    /// `S` to `SSSSSSSSS`: that many digits of the fraction of a second (`SSS`: millis).
    Fraction(u32),
    /// `Z`: `+0800`
    OffsetCompact,
    /// `XXX`: `+08:00`
    OffsetColon,
    /// Literal text.
    Literal(String),
}

/// A compiled time format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// Seconds since the Unix epoch.
    UnixSeconds,
    /// Milliseconds since the Unix epoch.
    UnixMillis,
    /// RFC 3339: read with any number of fraction digits (nanosecond precision kept) and `Z`
    /// or a `±hh:mm` offset; written in whole seconds, `Z` for UTC.
    Rfc3339,
    /// A pattern.
    Pattern(Vec<Piece>),
}

/// Parses a UTC offset written `+08:00`, `+0800`, `-05:30` or `Z`.
pub fn parse_offset(text: &str) -> Result<UtcOffset, String> {
    if text == "Z" || text == "z" {
        return Ok(UtcOffset::UTC);
    }
    let bad = || format!("'{text}' is not a UTC offset (write it like +08:00 or -05:30)");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1i8, text.get(1..).unwrap_or_default()),
        Some(b'-') => (-1i8, text.get(1..).unwrap_or_default()),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i8 = digits
        .get(..2)
        .and_then(|h| h.parse().ok())
        .ok_or_else(bad)?;
    let minutes: i8 = digits
        .get(2..)
        .and_then(|m| m.parse().ok())
        .ok_or_else(bad)?;
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())
}

impl TimeFormat {
    /// Compiles a format, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "unix_seconds" => return Ok(TimeFormat::UnixSeconds),
            "unix_millis" => return Ok(TimeFormat::UnixMillis),
            "rfc3339" => return Ok(TimeFormat::Rfc3339),
            _ => {}
        }
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut i = 0;
        let run = |i: usize, c: char| chars.iter().skip(i).take_while(|x| **x == c).count();
        while let Some(&c) = chars.get(i) {
            let n = run(i, c);
            let piece = match (c, n) {
                ('y', 4) => Piece::Year,
                ('M', 2) => Piece::Month,
                ('d', 2) => Piece::Day,
                ('H', 2) => Piece::Hour,
                ('m', 2) => Piece::Minute,
                ('s', 2) => Piece::Second,
                ('S', n @ 1..=9) => Piece::Fraction(u32::try_from(n).unwrap_or(3)),
                ('Z', 1) => Piece::OffsetCompact,
                ('X', 3) => Piece::OffsetColon,
                ('\'', _) => {
                    let end = chars
                        .iter()
                        .skip(i + 1)
                        .position(|x| *x == '\'')
                        .ok_or_else(|| format!("unclosed quote in time format '{text}'"))?;
                    let lit: String = chars.iter().skip(i + 1).take(end).collect();
                    i += end + 2;
                    pieces.push(Piece::Literal(lit));
                    continue;
                }
                (c, n) if c.is_ascii_alphabetic() => {
                    let token: String = std::iter::repeat_n(c, n).collect();
                    return Err(format!(
                        "unknown field '{token}' in time format '{text}' (use unix_seconds, unix_millis, rfc3339, or a pattern of yyyy, MM, dd, HH, mm, ss, S to SSSSSSSSS, Z, XXX, quoting literal letters like 'T')"
                    ));
                }
                (c, n) => Piece::Literal(std::iter::repeat_n(c, n).collect()),
            };
            pieces.push(piece);
            i += n;
        }
        Ok(TimeFormat::Pattern(pieces))
    }

    /// Writes `at` in this format, in the offset given.
    pub fn format(&self, at: OffsetDateTime, offset: UtcOffset) -> String {
        let at = at.to_offset(offset);
        match self {
            TimeFormat::UnixSeconds => at.unix_timestamp().to_string(),
            TimeFormat::UnixMillis => (at.unix_timestamp_nanos() / 1_000_000).to_string(),
            TimeFormat::Rfc3339 => {
                let zone = if offset.is_utc() {
                    "Z".to_string()
                } else {
                    offset_text(offset, ":")
                };
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
                    at.year(),
                    u8::from(at.month()),
                    at.day(),
                    at.hour(),
                    at.minute(),
                    at.second()
                )
            }
            TimeFormat::Pattern(pieces) => {
                let mut out = String::with_capacity(24);
                for p in pieces {
                    match p {
                        Piece::Year => out.push_str(&format!("{:04}", at.year())),
                        Piece::Month => out.push_str(&format!("{:02}", u8::from(at.month()))),
                        Piece::Day => out.push_str(&format!("{:02}", at.day())),
                        Piece::Hour => out.push_str(&format!("{:02}", at.hour())),
                        Piece::Minute => out.push_str(&format!("{:02}", at.minute())),
                        Piece::Second => out.push_str(&format!("{:02}", at.second())),
                        Piece::Fraction(n) => {
                            let digits = format!("{:09}", at.nanosecond());
                            out.push_str(digits.get(..*n as usize).unwrap_or(&digits));
                        }
                        Piece::OffsetCompact | Piece::OffsetColon => {
                            let sep = if *p == Piece::OffsetColon { ":" } else { "" };
                            out.push_str(&offset_text(offset, sep));
                        }
                        Piece::Literal(l) => out.push_str(l),
                    }
                }
                out
            }
        }
    }

    /// Reads a time written in this format; `offset` applies when the pattern has no zone.
    pub fn parse_time(&self, text: &str, offset: UtcOffset) -> Result<OffsetDateTime, String> {
        let bad = || format!("'{text}' does not match the expected time format");
        match self {
            TimeFormat::UnixSeconds => {
                let secs: i64 = text.trim().parse().map_err(|_| bad())?;
                OffsetDateTime::from_unix_timestamp(secs).map_err(|_| bad())
            }
            TimeFormat::UnixMillis => {
                let ms: i128 = text.trim().parse().map_err(|_| bad())?;
                OffsetDateTime::from_unix_timestamp_nanos(
                    ms.checked_mul(1_000_000).ok_or_else(bad)?,
                )
                .map_err(|_| bad())
            }
            TimeFormat::Rfc3339 => parse_rfc3339(text.trim()).ok_or_else(bad),
            TimeFormat::Pattern(pieces) => {
                let (mut y, mut mo, mut d, mut h, mut mi, mut s, mut ns) = (1970, 1, 1, 0, 0, 0, 0);
                let mut zone = offset;
                let mut rest = text;
                let take = |n: usize, rest: &mut &str| -> Result<i32, String> {
                    let digits = rest.get(..n).ok_or_else(bad)?;
                    if !digits.chars().all(|c| c.is_ascii_digit()) {
                        return Err(bad());
                    }
                    *rest = rest.get(n..).unwrap_or_default();
                    digits.parse().map_err(|_| bad())
                };
                for p in pieces {
                    match p {
                        Piece::Year => y = take(4, &mut rest)?,
                        Piece::Month => mo = take(2, &mut rest)?,
                        Piece::Day => d = take(2, &mut rest)?,
                        Piece::Hour => h = take(2, &mut rest)?,
                        Piece::Minute => mi = take(2, &mut rest)?,
                        Piece::Second => s = take(2, &mut rest)?,
                        Piece::Fraction(n) => {
                            let v = take(*n as usize, &mut rest)?;
                            ns = v * 10_i32.pow(9 - n);
                        }
                        Piece::OffsetCompact | Piece::OffsetColon => {
                            let len = if rest.starts_with('Z') {
                                1
                            } else if *p == Piece::OffsetColon {
                                6
                            } else {
                                5
                            };
                            zone = parse_offset(rest.get(..len).ok_or_else(bad)?)?;
                            rest = rest.get(len..).unwrap_or_default();
                        }
                        Piece::Literal(l) => {
                            rest = rest.strip_prefix(l.as_str()).ok_or_else(bad)?;
                        }
                    }
                }
                if !rest.is_empty() {
                    return Err(bad());
                }
                let month = u8::try_from(mo)
                    .ok()
                    .and_then(|m| time::Month::try_from(m).ok())
                    .ok_or_else(bad)?;
                let small = |v: i32| u8::try_from(v).map_err(|_| bad());
                let date =
                    time::Date::from_calendar_date(y, month, small(d)?).map_err(|_| bad())?;
                let clock = time::Time::from_hms_nano(
                    small(h)?,
                    small(mi)?,
                    small(s)?,
                    u32::try_from(ns).map_err(|_| bad())?,
                )
                .map_err(|_| bad())?;
                Ok(PrimitiveDateTime::new(date, clock).assume_offset(zone))
            }
        }
    }
}

/// `+08:00` (`sep` `:`) or `+0800` (`sep` empty).
fn offset_text(offset: UtcOffset, sep: &str) -> String {
    let (h, m, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!("{sign}{:02}{sep}{:02}", h.abs(), m.abs())
}

/// RFC 3339 (`2021-05-07T01:20:39.123456789Z`): any number of fraction digits (digits beyond
/// the ninth are dropped), `T` or `t`, `Z`, `z` or a `±hh:mm` offset.
fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    let head = text.get(..19)?;
    let mut rest = text.get(19..)?;
    let (date, clock) = (head.get(..10)?, head.get(11..)?);
    if !matches!(head.get(10..11)?, "T" | "t") {
        return None;
    }
    let base = TimeFormat::Pattern(vec![
        Piece::Year,
        Piece::Literal("-".into()),
        Piece::Month,
        Piece::Literal("-".into()),
        Piece::Day,
        Piece::Literal(" ".into()),
        Piece::Hour,
        Piece::Literal(":".into()),
        Piece::Minute,
        Piece::Literal(":".into()),
        Piece::Second,
    ])
    .parse_time(&format!("{date} {clock}"), UtcOffset::UTC)
    .ok()?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = frac.get(..n)?;
        let nine: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        nanos = nine.parse().ok()?;
        rest = frac.get(n..)?;
    }
    let zone = match rest {
        "Z" | "z" => UtcOffset::UTC,
        _ if rest.len() == 6 && rest.get(3..4) == Some(":") => parse_offset(rest).ok()?,
        _ => return None,
    };
    base.replace_nanosecond(nanos)
        .ok()
        .map(|t| t.replace_offset(zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn milliseconds_and_rfc3339() {
        // 2025-01-01 is 1 735 689 600 s after the epoch; 2025 has 365 days.
        let t = datetime!(2026-01-01 00:00:00.25 UTC);
        assert_eq!(unix_ms(t), 1_767_225_600_250);
        assert_eq!(rfc3339_ms(1_767_225_600_250), "2026-01-01T00:00:00.25Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(datetime!(2026-11-28 08:00 +08:00)),
            "2026-11-28T08:00:00+08:00"
        );
        assert_eq!(rfc3339_ms(i64::MAX), "", "out of range");
    }

    #[test]
    fn formats_platform_timestamps() {
        // 2016-01-01 04:00:00 UTC is 12:00 in UTC+8; unix 1451620800 (date -d @1451620800).
        let at = datetime!(2016-01-01 04:00:00.683 UTC);
        let cst = parse_offset("+08:00").unwrap();
        let f = |p: &str, o| TimeFormat::parse(p).unwrap().format(at, o);
        assert_eq!(f("yyyy-MM-dd HH:mm:ss", cst), "2016-01-01 12:00:00");
        assert_eq!(
            f("yyyy-MM-dd HH:mm:ss.SSSZ", cst),
            "2016-01-01 12:00:00.683+0800"
        );
        assert_eq!(
            f("yyyyMMdd'T'HHmmss'Z'", UtcOffset::UTC),
            "20160101T040000Z"
        );
        assert_eq!(
            f("yyyy-MM-dd'T'HH:mm:ssXXX", cst),
            "2016-01-01T12:00:00+08:00"
        );
        assert_eq!(f("unix_seconds", cst), "1451620800");
        assert_eq!(f("unix_millis", cst), "1451620800683");
    }

    #[test]
    fn parses_what_it_formats() {
        let cst = parse_offset("+0800").unwrap();
        let fmt = TimeFormat::parse("yyyy-MM-dd HH:mm:ss").unwrap();
        let at = fmt.parse_time("2016-01-01 12:00:00", cst).unwrap();
        assert_eq!(at.unix_timestamp(), 1_451_620_800);
        assert!(fmt.parse_time("2016-01-01 12:00", cst).is_err());
        assert!(fmt.parse_time("2016-13-01 12:00:00", cst).is_err());
        let z = TimeFormat::parse("yyyy-MM-dd HH:mm:ss.SSSZ").unwrap();
        let at = z
            .parse_time("2021-05-07 09:20:39.683+0800", UtcOffset::UTC)
            .unwrap();
        assert_eq!(at.unix_timestamp(), 1_620_350_439);
    }

    #[test]
    fn rfc3339_reads_any_number_of_fraction_digits() {
        // 2021-05-07T01:20:39Z is Unix 1620350439 (`date -u -d 2021-05-07T01:20:39Z +%s`).
        let f = TimeFormat::parse("rfc3339").unwrap();
        for (text, nanos) in [
            ("2021-05-07T01:20:39Z", 0),
            ("2021-05-07T09:20:39.6+08:00", 600_000_000),
            ("2021-05-07T01:20:39.683Z", 683_000_000),
            ("2021-05-07t01:20:39.123456789z", 123_456_789),
            ("2021-05-07T01:20:39.1234567891234Z", 123_456_789),
            ("2021-05-06T20:20:39.000001-05:00", 1_000),
        ] {
            let at = f.parse_time(text, UtcOffset::UTC).unwrap();
            assert_eq!(at.unix_timestamp(), 1_620_350_439, "{text}");
            assert_eq!(at.nanosecond(), nanos, "{text}");
        }
        for bad in [
            "2021-05-07T01:20:39.Z",
            "2021-05-07T01:20:39",
            "2021-05-07T01:20:39.5",
            "2021-05-07 01:20:39Z",
            "2021-05-07T01:20:39+0800",
            "2021-05-07T01:20:39.12a4Z",
        ] {
            assert!(f.parse_time(bad, UtcOffset::UTC).is_err(), "{bad}");
        }
        // Written in whole seconds, `Z` for UTC.
        let at = datetime!(2016-01-01 04:00:00.683 UTC);
        assert_eq!(f.format(at, UtcOffset::UTC), "2016-01-01T04:00:00Z");
        let cst = parse_offset("+08:00").unwrap();
        assert_eq!(f.format(at, cst), "2016-01-01T12:00:00+08:00");
    }

    #[test]
    fn patterns_take_one_to_nine_fraction_digits() {
        let f = TimeFormat::parse("yyyy-MM-dd'T'HH:mm:ss.SSSSSSSSSXXX").unwrap();
        let at = f
            .parse_time("2021-05-07T01:20:39.123456789Z", UtcOffset::UTC)
            .unwrap();
        assert_eq!(at.unix_timestamp(), 1_620_350_439);
        assert_eq!(at.nanosecond(), 123_456_789);
        assert_eq!(
            f.format(at, UtcOffset::UTC),
            "2021-05-07T01:20:39.123456789+00:00"
        );
        let micros = TimeFormat::parse("HH:mm:ss.SSSSSS").unwrap();
        assert_eq!(micros.format(at, UtcOffset::UTC), "01:20:39.123456");
        assert!(TimeFormat::parse("ss.SSSSSSSSSS").is_err());
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = TimeFormat::parse("yyyy-MM-ddTHH").unwrap_err();
        assert!(err.contains("'T'"), "{err}");
        assert!(parse_offset("8").is_err());
        assert!(TimeFormat::parse("yyyy'T").is_err());
    }
}
