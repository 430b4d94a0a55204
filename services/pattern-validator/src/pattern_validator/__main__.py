from aitrading.service import run
from pattern_validator.main import create_app

if __name__ == "__main__":
    run(create_app())
