"""The pretrained controller (:class:`Controller`) and the parts it is composed of."""

from rlhpo.controller.controller import Controller

__all__ = ["Controller"]
