from aitrading.service import run
from database_service.main import create_app

if __name__ == "__main__":
    run(create_app())
