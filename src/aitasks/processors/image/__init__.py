"""The image job types. Heavy libraries (OpenCV, mediapipe, torch) are imported inside functions, so
the API process, which imports every job type for validation and the catalog, never loads them."""
