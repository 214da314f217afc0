//! The Cloud API simulator (`waq sim`).
