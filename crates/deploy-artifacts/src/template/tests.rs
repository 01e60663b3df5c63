//! Unit tests of template parsing: accepted shapes and every refusal with its message.
