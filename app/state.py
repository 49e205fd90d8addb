"""Keys of st.session_state shared between pages, in one place."""

CAPTION = "renal_ldm.caption"  # the caption composed on Compose, used by Generate
CAPTION_SOURCE = "renal_ldm.caption_source"  # one of the three values below
FROM_COMPOSER, FROM_PRESET, FROM_FREE_TEXT = "composer", "preset", "free text"
REGENERATE = "renal_ldm.regenerate"  # a Library sample's parameters, to generate again with its seed
JOBS = "renal_ldm.jobs"  # this browser session's generation job ids, newest first
