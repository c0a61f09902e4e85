//! What both sinks keep between calls: the upload in progress, or the error it ended with.
//! After a failure every later `write` or `finish` repeats that error instead of touching an
//! upload that is gone.

use aerie_adapter_api::AdapterError;

/// An upload in progress (`U`), or why it ended.
pub struct UploadState<U> {
    /// The upload; `None` once finished, aborted or failed.
    upload: Option<U>,
    /// Why the upload failed, repeated to any later call.
    failure: Option<AdapterError>,
}

impl<U> UploadState<U> {
    /// The state of an upload that has just begun.
    pub fn new(upload: U) -> Self {
        Self {
            upload: Some(upload),
            failure: None,
        }
    }

    /// The upload in progress, or the error it already failed with.
    pub fn get(&mut self) -> Result<&mut U, AdapterError> {
        match (&mut self.upload, &self.failure) {
            (Some(upload), _) => Ok(upload),
            (None, Some(failure)) => Err(AdapterError::new(
                failure.kind,
                format!("the upload already failed: {}", failure.message),
            )),
            (None, None) => Err(AdapterError::other("the upload is already over")),
        }
    }

    /// Takes the upload out, to end it; later calls hear that it is over.
    pub fn take(&mut self) -> Option<U> {
        self.upload.take()
    }

    /// Ends the upload with `stop` after `err`, keeps `err` for later calls, and returns it.
    pub fn fail(&mut self, err: AdapterError, stop: impl FnOnce(U, &AdapterError)) -> AdapterError {
        if let Some(upload) = self.upload.take() {
            stop(upload, &err);
        }
        self.failure = Some(err.clone());
        err
    }
}
