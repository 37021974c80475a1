"""Protobuf message classes, built at run time from the descriptor set in
proto/descriptors.binpb (compiled by buf from the .proto files next to it:
`make proto` refreshes both, `make proto-check` fails when they are stale).

No generated Python code is needed, so the plugin works with whatever
python3-protobuf version Debian ships (3.21 in bookworm, 4.x later).
"""

import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "proto", "descriptors.binpb")


class Messages:
    """Message classes by full name: m["raftd.fsm.v1.InfoResponse"]."""

    def __init__(self, path=DESCRIPTORS):
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            self.pool.AddSerializedFile(fd.SerializeToString())
        get_class = getattr(message_factory, "GetMessageClass", None)
        if get_class is None:  # protobuf < 4.21
            factory = message_factory.MessageFactory(self.pool)
            get_class = factory.GetPrototype
        self._get_class = get_class
        self._classes = {}

    def __getitem__(self, full_name):
        c = self._classes.get(full_name)
        if c is None:
            c = self._get_class(self.pool.FindMessageTypeByName(full_name))
            self._classes[full_name] = c
        return c

    def method(self, service, name):
        """Returns (request class, response class) of service.name."""
        m = self.pool.FindServiceByName(service).FindMethodByName(name)
        return self[m.input_type.full_name], self[m.output_type.full_name]
