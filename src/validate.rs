//! Checks of send requests.
