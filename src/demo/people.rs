//! Who the demo's messages go to: a handful of named customers for the story, numbered ones
//! for the burst and the outage, and a few numbers that are not on WhatsApp.

/// The business number the simulator knows and the daemon's sender `main` uses.
pub const PHONE_NUMBER_ID: &str = "120000000000001";

/// A customer the story talks about.
#[derive(Debug, Clone, Copy)]
pub struct Customer {
    pub name: &'static str,
    pub number: &'static str,
}

/// New customers: none of them has ever written to the business.
pub const NEW_CUSTOMERS: [Customer; 5] = [
    Customer {
        name: "Ann",
        number: "+1 555 010 0001",
    },
    Customer {
        name: "Ben",
        number: "+1 555 010 0002",
    },
    Customer {
        name: "Cleo",
        number: "+1 555 010 0003",
    },
    Customer {
        name: "Dev",
        number: "+1 555 010 0004",
    },
    Customer {
        name: "Eve",
        number: "+1 555 010 0005",
    },
];

/// The customers who reply in chapter 2 (indexes into `NEW_CUSTOMERS`).
pub const REPLYING: [usize; 2] = [0, 1];

/// Numbers with no WhatsApp account: Meta answers 131026.
pub const NOT_ON_WHATSAPP: [&str; 3] = ["+1 555 019 0001", "+1 555 019 0002", "+1 555 019 0003"];

/// The `i`-th recipient of the burst (all distinct: Meta's pair rate limit is per recipient).
pub fn burst_recipient(i: u32) -> String {
    format!("+1555{:07}", 2_000_000 + i)
}

/// The `i`-th recipient during the outage.
pub fn outage_recipient(i: u32) -> String {
    format!("+1555{:07}", 3_000_000 + i)
}

/// The digits of a number, as the daemon and Meta show it.
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}
