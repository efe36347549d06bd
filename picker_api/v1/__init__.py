"""Generated Python stubs of ``protos/endpoint_picker/v1`` (proto package ``endpoint_picker.v1``).

``picker_pb2`` (messages), ``picker_pb2.pyi`` (their types) and ``picker_pb2_grpc`` (service stub and servicer
base) are written here by grpcio-tools when the project is built or installed (setup.py's ``build_stubs``);
they are not in git and are never edited by hand. Import them as ``from picker_api.v1 import picker_pb2``.
"""
