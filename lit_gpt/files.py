"""Reading user-supplied text files with one clear error for each way they can be wrong."""

from pathlib import Path

from lit_gpt.errors import LitGPTError


def read_utf8(path: Path, what: str, option: str) -> str:
    """The text of ``path``; ``what`` names the file and ``option`` the flag that sets it, for the error messages."""
    if path.is_dir():
        raise LitGPTError(f"{what} {path} is a directory; pass {option} a UTF-8 text file")
    if not path.is_file():
        raise LitGPTError(f"{what} not found: {path} (pass {option} a UTF-8 text file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LitGPTError(
            f"{what} {path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} is invalid"
        ) from None
    except OSError as err:
        raise LitGPTError(f"cannot read {what} {path}: {err.strerror}") from None
