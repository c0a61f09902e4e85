//! Placeholder: the S3 adapter is being written.
