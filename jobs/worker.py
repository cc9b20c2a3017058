"""The worker class every `rqworker` / `rqworker-pool` process uses (settings `RQ["WORKER_CLASS"]`)."""

from rq import Worker
from rq.serializers import JSONSerializer


class CeresWorker(Worker):
    """An RQ worker that always speaks JSON.

    django-rq's `rqworker` passes `rq.serializers.DefaultSerializer` (pickle) unless told otherwise,
    whatever the queues say; a worker that unpickled job data would run whatever Redis hands it.
    """

    def __init__(self, *args, serializer=None, **kwargs):
        super().__init__(*args, serializer=JSONSerializer, **kwargs)
