from image_router.cli import main

main()
