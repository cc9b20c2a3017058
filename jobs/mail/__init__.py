"""Sending email over SMTP: the held connection with the waits RFC 5321 gives (`smtp`), the bytes and Message-ID
of a message (`messages`) and the hourly cap shared by every worker (`throttle`).

May import `jobs.config` and `jobs.enqueue`; knows nothing of jobs' failures or of the runtime.
"""
