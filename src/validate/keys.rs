//! The keys Meta knows in the objects of a send request, shared by waq's checks at enqueue
//! and the simulator's, so that the two refuse the same keys. Meta refuses a key it does not
//! know (error 100, "Unexpected key").

/// Objects whose keys have been fixed for years: any other key is refused.
pub const TEXT: &[&str] = &["body", "preview_url"];
pub const LOCATION: &[&str] = &["latitude", "longitude", "name", "address"];
pub const REACTION: &[&str] = &["message_id", "emoji"];
pub const CONTEXT: &[&str] = &["message_id"];
pub const TEMPLATE: &[&str] = &["name", "language", "components"];
pub const LANGUAGE: &[&str] = &["code", "policy"];
/// `cards`: a carousel's, each card with its own components.
pub const COMPONENT: &[&str] = &["type", "sub_type", "index", "parameters", "cards"];
/// The `type` of a template component in a send (any case).
pub const COMPONENT_TYPES: &[&str] =
    &["header", "body", "button", "carousel", "limited_time_offer"];
/// An interactive object's top level (its header and action vary by type, and are left to
/// the checks of each type).
pub const INTERACTIVE: &[&str] = &["type", "header", "body", "footer", "action"];
/// Template parameter types whose object is `type`, `parameter_name` (templates with named
/// parameters) and the value under the type's own key. Newer types (`limited_time_offer`,
/// `action`, ...) are left to Meta.
pub const PARAMETER_TYPES: &[&str] = &[
    "text",
    "currency",
    "date_time",
    "image",
    "video",
    "document",
    "location",
    "payload",
    "coupon_code",
];

/// Objects Meta still adds keys to (`voice` on audio, lately): only a key that is a near miss
/// of one of these is refused, others pass as given.
pub const MEDIA: &[&str] = &["id", "link", "caption", "filename", "voice"];
/// The message types of the Cloud API (`type`, and the key of its object).
pub const MESSAGE_TYPES: [&str; 11] = [
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

/// The request itself, and its message objects (the one `type` names is sent).
pub const REQUEST: [&str; 17] = concat(
    [
        "messaging_product",
        "recipient_type",
        "to",
        "type",
        "context",
        "biz_opaque_callback_data",
    ],
    MESSAGE_TYPES,
);

/// `a` then `b`, for lists made of others.
pub const fn concat<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "the lengths do not add up");
    let mut out = [""; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < B {
        out[A + j] = b[j];
        j += 1;
    }
    out
}
