"""raftd's kv state machine (versions 1 and 2) as a Python plugin process.

Modules: kv (the state machine), service (the raftd.fsm.v1.StateMachine
gRPC service), goplugin (the go-plugin process protocol), cert (the
AutoMTLS certificate), protos (message classes from the descriptor set),
main (the entry point run by raftd-fsm-python-kv).
"""
