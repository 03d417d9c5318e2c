//! How times are written for people: milliseconds from microseconds, one way everywhere.

/// Microseconds as milliseconds with three decimals, exactly (`1234567` → `1234.567`).
pub fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// Microseconds as milliseconds with two decimals, rounded (chart labels).
pub fn ms2(us: u64) -> String {
    let hundredths = (us + 5) / 10;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ms_table() {
        for (us, three, two) in [
            (0, "0.000", "0.00"),
            (845, "0.845", "0.85"),
            (1_234_567, "1234.567", "1234.57"),
            (994, "0.994", "0.99"),
            (995, "0.995", "1.00"),
        ] {
            assert_eq!((super::ms(us).as_str(), super::ms2(us).as_str()), (three, two), "{us}");
        }
    }
}
