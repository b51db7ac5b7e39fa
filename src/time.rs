//! Time values as recur reads them (event `ts` fields, file time columns,
//! `--from`/`--to`): epoch milliseconds, UTC. See [`parse_time`].

/// Milliseconds in a day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Epoch numbers at or above this magnitude are milliseconds, below it
/// seconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
const EPOCH_MS_THRESHOLD: f64 = 1e11;

/// Parses one time value as epoch ms (used by load and by the CLI for --from/--to).
///
/// Accepted, all read as UTC unless they carry an offset:
///
/// * ISO 8601 / RFC 3339: `2016-07-01T00:00:00Z`, `2016-07-01T02:00:00+02:00`
///   (also `+0200`, `+02`), fractional seconds (`…:00.250Z`, digits past
///   milliseconds are truncated), seconds optional, `T` or a space between
///   date and time, no zone meaning UTC; so `2016-07-01 00:00:00` too;
/// * a date, `2016-07-01` (midnight UTC);
/// * epoch seconds or milliseconds, integer or decimal: a magnitude of at
///   least 1e11 means milliseconds, below it seconds (so milliseconds before
///   March 1973 would be read as seconds);
/// * US `M/D/YYYY H:MM` or `M/D/YYYY H:MM:SS` (24-hour), or `M/D/YYYY`.
///
/// The error names the value and what was wrong with it.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let b = t.as_bytes();
    let result = if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        parse_iso(b)
    } else if t.contains('/') {
        parse_us(b)
    } else if !t.is_empty()
        && t.bytes()
            .all(|c| c.is_ascii_digit() || c == b'-' || c == b'+')
    {
        match t.parse::<i64>() {
            Ok(v) => epoch_int_to_ms(v),
            Err(_) => Err("not a valid integer".to_owned()),
        }
    } else {
        match t.parse::<f64>() {
            Ok(v) => epoch_float_to_ms(v, t),
            Err(_) => Err(
                "expected ISO 8601 (2016-07-01T00:00:00Z), YYYY-MM-DD HH:MM:SS, \
                 YYYY-MM-DD, epoch seconds or milliseconds, or M/D/YYYY H:MM"
                    .to_owned(),
            ),
        }
    };
    result.map_err(|why| format!("`{s}` is not a time: {why}"))
}

pub(crate) fn epoch_int_to_ms(v: i64) -> Result<i64, String> {
    if v.unsigned_abs() >= EPOCH_MS_THRESHOLD as u64 {
        Ok(v)
    } else {
        Ok(v * 1000)
    }
}

pub(crate) fn epoch_float_to_ms(v: f64, text: &str) -> Result<i64, String> {
    if !v.is_finite() {
        return Err(format!("{text} is not a finite number"));
    }
    let ms = if v.abs() >= EPOCH_MS_THRESHOLD {
        v.round()
    } else {
        (v * 1000.0).round()
    };
    if ms.abs() >= 9.2e18 {
        return Err("out of range".to_owned());
    }
    Ok(ms as i64)
}

/// A cursor over the bytes of a time string.
struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected `{}` at position {}",
                c as char,
                self.at + 1
            ))
        }
    }

    /// Between `min` and `max` digits as a number.
    fn digits(&mut self, min: usize, max: usize, what: &str) -> Result<i64, String> {
        let start = self.at;
        let mut v = 0i64;
        while self.at - start < max {
            match self.peek() {
                Some(c @ b'0'..=b'9') => {
                    v = v * 10 + i64::from(c - b'0');
                    self.at += 1;
                }
                _ => break,
            }
        }
        if self.at - start < min {
            return Err(format!("expected {what} at position {}", start + 1));
        }
        Ok(v)
    }

    fn done(&self) -> bool {
        self.at == self.b.len()
    }

    fn trailing(&self) -> String {
        format!(
            "unexpected `{}` at position {}",
            String::from_utf8_lossy(&self.b[self.at..]),
            self.at + 1
        )
    }
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]][Z|±HH[:MM]]]`.
fn parse_iso(b: &[u8]) -> Result<i64, String> {
    let mut c = Scanner { b, at: 0 };
    let year = c.digits(4, 4, "a 4-digit year")?;
    c.expect(b'-')?;
    let month = c.digits(2, 2, "a 2-digit month")?;
    c.expect(b'-')?;
    let day = c.digits(2, 2, "a 2-digit day")?;
    let date = days_from_civil(year, month, day)?;
    if c.done() {
        return Ok(date * MS_PER_DAY);
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(c.trailing());
    }
    let hour = c.digits(2, 2, "a 2-digit hour")?;
    c.expect(b':')?;
    let minute = c.digits(2, 2, "2-digit minutes")?;
    let mut second = 0;
    let mut ms = 0;
    if c.eat(b':') {
        second = c.digits(2, 2, "2-digit seconds")?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.at;
            let frac = c.digits(1, usize::MAX, "fractional seconds")?;
            let len = c.at - start;
            ms = if len >= 3 {
                // Leading three digits; the rest is below a millisecond.
                let digits = &b[start..start + 3];
                digits.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0'))
            } else {
                frac * 10i64.pow(3 - len as u32)
            };
        }
    }
    let clock = clock_ms(hour, minute, second)?;
    let offset_min = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.at += 1;
            let h = c.digits(2, 2, "a 2-digit offset hour")?;
            c.eat(b':');
            let m = if c.done() {
                0
            } else {
                c.digits(2, 2, "2-digit offset minutes")?
            };
            if h > 23 || m > 59 {
                return Err(format!("offset {h:02}:{m:02} is out of range"));
            }
            let minutes = h * 60 + m;
            if sign == b'+' { minutes } else { -minutes }
        }
        Some(_) => return Err(c.trailing()),
    };
    if !c.done() {
        return Err(c.trailing());
    }
    Ok(date * MS_PER_DAY + clock + ms - offset_min * 60_000)
}

/// `M/D/YYYY[ H:MM[:SS]]`.
fn parse_us(b: &[u8]) -> Result<i64, String> {
    let mut c = Scanner { b, at: 0 };
    let month = c.digits(1, 2, "a month")?;
    c.expect(b'/')?;
    let day = c.digits(1, 2, "a day")?;
    c.expect(b'/')?;
    let year = c.digits(4, 4, "a 4-digit year")?;
    let date = days_from_civil(year, month, day)?;
    let mut clock = 0;
    if c.eat(b' ') {
        let hour = c.digits(1, 2, "an hour")?;
        c.expect(b':')?;
        let minute = c.digits(2, 2, "2-digit minutes")?;
        let second = if c.eat(b':') {
            c.digits(2, 2, "2-digit seconds")?
        } else {
            0
        };
        clock = clock_ms(hour, minute, second)?;
    }
    if !c.done() {
        return Err(c.trailing());
    }
    Ok(date * MS_PER_DAY + clock)
}

fn clock_ms(hour: i64, minute: i64, second: i64) -> Result<i64, String> {
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    Ok(((hour * 60 + minute) * 60 + second) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), after checking the month and day exist.
fn days_from_civil(year: i64, month: i64, day: i64) -> Result<i64, String> {
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JULY_1_2016: i64 = 1_467_331_200_000;

    #[test]
    fn iso_forms() {
        assert_eq!(parse_time("2016-07-01T00:00:00Z"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01t00:00:00z"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T00:00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T02:00:00+02:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-06-30T22:30:00-01:30"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T05:30:00+0530"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T03:00:00+03"), Ok(JULY_1_2016));
        assert_eq!(
            parse_time("2016-07-01T00:00:00.250Z"),
            Ok(JULY_1_2016 + 250)
        );
        assert_eq!(parse_time("2016-07-01T00:00:00.5"), Ok(JULY_1_2016 + 500));
        assert_eq!(
            parse_time("2016-07-01T00:00:01.123456789Z"),
            Ok(JULY_1_2016 + 1123)
        );
        assert_eq!(parse_time(" 2016-07-01 00:00:00 "), Ok(JULY_1_2016));
        assert_eq!(
            parse_time("2016-07-01 13:45:10"),
            Ok(JULY_1_2016 + 49_510_000)
        );
        assert_eq!(parse_time("2016-07-01"), Ok(JULY_1_2016));
    }

    #[test]
    fn calendar() {
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_time("2000-03-01"), Ok(951_868_800_000));
        assert_eq!(parse_time("2024-02-29"), Ok(1_709_164_800_000));
        assert!(parse_time("2023-02-29").is_err());
        assert!(parse_time("1900-02-29").is_err());
        assert!(parse_time("2016-13-01").is_err());
        assert!(parse_time("2016-04-31").is_err());
        assert!(parse_time("2016-07-01 24:00:00").is_err());
        assert!(parse_time("2016-07-01 23:60:00").is_err());
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(parse_time("1467331200"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1467331200000"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1467331200.25"), Ok(JULY_1_2016 + 250));
        assert_eq!(parse_time("1467331200000.0"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1.4673312e9"), Ok(JULY_1_2016));
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("-86400"), Ok(-MS_PER_DAY));
        // The boundary: 1e11 and above are milliseconds.
        assert_eq!(parse_time("99999999999"), Ok(99_999_999_999_000));
        assert_eq!(parse_time("100000000000"), Ok(100_000_000_000));
    }

    #[test]
    fn us_forms() {
        assert_eq!(parse_time("7/1/2016 0:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("07/01/2016 00:00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("7/1/2016 13:05"), Ok(JULY_1_2016 + 47_100_000));
        assert_eq!(parse_time("12/31/2016 23:59:59"), Ok(1_483_228_799_000));
        assert_eq!(parse_time("7/1/2016"), Ok(JULY_1_2016));
        assert!(parse_time("13/1/2016 0:00").is_err());
        assert!(parse_time("7/1/16 0:00").is_err());
    }

    #[test]
    fn bad_input_names_the_value() {
        for bad in [
            "",
            "yesterday",
            "2016-07-01X00:00:00",
            "2016-07-01T00:00:00Q",
            "2016-7-1",
            "2016-07-01T00:00:00+25:00",
            "7/1/2016 0:00 PM",
            "NaN",
            "inf",
            "12:00",
            "1-2",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad:?}: {err}");
        }
    }
}
