"""The caps that keep a free CPU Space (2 cores, 16 GB) responsive and fair for every visitor, in one place.

README, "Security", explains each; the modules that enforce them import them from here.
"""

# Inputs, training jobs, uploads, evaluations
MAX_TEXT_CHARS = 200_000  # NER text / QA context; longer inputs are windowed, this only stops abuse
MAX_TRAIN_STEPS = 300
MAX_TRAIN_SECONDS = 600
MAX_TRAIN_TEXT_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # an adapter zip (a MAD-X language adapter of XLM-R base is ~30 MB in fp32)
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_EVAL_EXAMPLES = 500

# Fair sharing: long texts take one lane, so they never hold every worker while one-sentence requests wait.
INFERENCE_WORKERS = 8  # Gradio's concurrency for the inference events (long texts hold at most MAX_LONG_REQUESTS)
LONG_TEXT_CHARS = 5_000  # a NER text or QA context longer than this is a "long" request
MAX_LONG_REQUESTS = 4  # long requests admitted at once (one computes, the others wait); more are told to retry
CHUNK_CHARS = 4_000  # a long NER text is tagged in pieces of about this size, taking turns with the others
MAX_REQUEST_SECONDS = 300  # a long request that has not finished by then is stopped with a message

# Upload quotas: per visitor (client address) and for the whole app, on count and on disk.
UPLOADS_PER_VISITOR = 10
UPLOAD_WINDOW_S = 3600
MAX_UPLOADED_ADAPTERS = 50
MAX_UPLOADED_BYTES = 500 * 1024 * 1024

# Evaluations run in the app, kept per browser session (in memory).
MAX_VISITOR_ROWS = 200  # evaluation rows kept per browser session
MAX_VISITORS = 1_000  # sessions whose evaluation rows are kept (the oldest are forgotten first)
