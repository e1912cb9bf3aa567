"""Transport: how clients and the node move batches of requests over gRPC.

* ``framing``: a batch message as the concatenation of framed entries (no copies);
* ``batcher``: concurrent callers' commands gathered into batches, a bounded number on
  the wire at once, the first caller of a batch sending it;
* ``request_stream``: one long-lived bidirectional call answering requests in order;
* ``streams``: the policy over it -- a stream while the server takes one, unary calls
  after a refusal (for a while) -- shared by the node's and the oracle's clients;
* ``stream_slots``: the server's admission of long-lived streams.
"""
