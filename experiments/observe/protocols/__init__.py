"""``load.protocol``'s clients: the requests of OIP v2, OpenAI, KServe V1 and plain HTTP, and the
judgement of their answers (a wrong answer is a failed request).

``runtime`` (the protocol with its payload file read and checked; what the Locust processes get),
``base`` (``Call``, ``Outcome``, ``ProtocolClient``), one module per protocol: ``oip_v2``, ``openai``
(whole and streamed: ``ttft_s``, ``itl_s``), ``plain`` (``kserve_v1`` and ``http``). Sending is the
locustfile's (``experiments/observe/protocol_locustfile.py``): nothing here opens a socket.
"""

from faultdrill.experiments.observe.protocols.base import Call, Outcome, ProtocolClient, WrongAnswer
from faultdrill.experiments.observe.protocols.runtime import MAX_PAYLOAD_BYTES, Runtime, client_of, prepare

__all__ = ["MAX_PAYLOAD_BYTES", "Call", "Outcome", "ProtocolClient", "Runtime", "WrongAnswer", "client_of", "prepare"]
